"""Every command and every relative link in README.md and docs/*.md exists, so a renamed flag or a moved page breaks
a test, not a reader's first try.

Commands are read from fenced code blocks (a trailing backslash continues a line) and from inline code spans:
* `unimask ...` (also `python -m unimask.cli ...`, `torchrun ... -m unimask.cli ...`, `deepspeed ... --module
  unimask.cli ...`): each subcommand named must exist in the real argparse parser (`unimask.cli.build_parser`), at
  every level (`unimask data lerobot`), and each `--flag` must be an option of the subcommand it follows.
* `python -m unimask.x.y ...`: the module must exist; `python path/to/script.py ...`: the file must exist. Their
  `--flag`s must be options the file declares with `add_argument`.
Placeholders in upper case (`CKPT`, `DIR`) and `...` stand for values and are not checked; `[--flag]` is optional
syntax around a flag that is checked; `a|b|c` in a module name lists alternatives, each checked.

Links: every `[text](target)` and `<img src="target">` outside code whose target is not a URL must name an existing
file relative to the page, and a `#anchor` must be the GitHub anchor of a heading of the target page.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG_SRC = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SEPARATORS = re.compile(r"\s(?:&&|\|\||\||;)\s")


@dataclass(frozen=True)
class Command:
    where: str  # "README.md:42"
    words: tuple[str, ...]  # the command's words, environment assignments left out


# ---------------------------------------------------------------------------------------------------------------------
# Reading the pages


def split_code(text: str) -> tuple[list[tuple[int, str]], str]:
    """(lines of fenced code blocks with their line numbers, continuation lines joined; the prose with the code
    blocks blanked out, so links and spans keep their line numbers)."""
    code, prose, inside, pending, start = [], [], False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            inside = not inside
            prose.append("")
            continue
        if not inside:
            prose.append(line)
            continue
        prose.append("")
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        code.append((start, pending + line))
        pending = ""
    return code, "\n".join(prose)


def words_of(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose-like code: read it word by word
        return text.split()


def commands_in(text: str, page: str) -> list[Command]:
    """Every shell command of a page: fenced code lines, and inline code spans of the prose."""
    code, prose = split_code(text)
    candidates = list(code)
    for number, line in enumerate(prose.splitlines(), start=1):
        candidates += [(number, span) for span in INLINE_CODE.findall(line)]
    found = []
    for number, line in candidates:
        for part in SEPARATORS.split(line):
            words = words_of(part)
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words:
                found.append(Command(f"{page}:{number}", tuple(words)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    _, prose = split_code(text)
    anchors: set[str] = set()
    for line in prose.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            anchor, count = base, 0
            while anchor in anchors:  # a repeated heading gets -1, -2, ... as on GitHub
                count += 1
                anchor = f"{base}-{count}"
            anchors.add(anchor)
    return anchors


# ---------------------------------------------------------------------------------------------------------------------
# Checking commands


@lru_cache(maxsize=1)
def unimask_parser() -> argparse.ArgumentParser:
    from unimask.cli import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def is_placeholder(word: str) -> bool:
    return word == "..." or word.isupper()


def flag_of(word: str) -> str | None:
    """`--flag` from `--flag`, `--flag=value` or `[--flag`; None for values."""
    word = word.strip("[]")
    return word.split("=", 1)[0] if word.startswith("--") else None


def check_unimask(words: tuple[str, ...]) -> list[str]:
    """Problems with the arguments of one `unimask` command, against the real parser."""
    parser, path, problems = unimask_parser(), "unimask", []
    takes_value = False  # the word before was a flag that takes a value
    for word in words:
        flag = flag_of(word)
        if flag is not None:
            action = parser._option_string_actions.get(flag)
            if action is None:
                problems.append(f"`{path}` has no option {flag}")
            takes_value = action is not None and action.nargs != 0 and "=" not in word
            continue
        if takes_value:
            takes_value = False
            continue
        choices = subcommands(parser)
        if not choices:
            continue  # a positional argument or a `key=value` override
        if is_placeholder(word):
            break  # `unimask data ...`: the rest is not spelled out
        if word not in choices:
            problems.append(f"`{path}` has no subcommand {word!r} (it has {', '.join(sorted(choices))})")
            break
        parser, path = choices[word], f"{path} {word}"
    return problems


def declared_flags(source: str) -> set[str]:
    """The option strings a script declares with `add_argument("--x", ...)`."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags.update(arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return flags


def check_script(source: str, name: str, arguments: tuple[str, ...]) -> list[str]:
    flags = declared_flags(source)
    return [f"{name} has no option {flag}" for flag in map(flag_of, arguments) if flag and flag not in flags]


def module_alternatives(module: str) -> list[str]:
    """`unimask.demos.a|b|c` -> the three module names."""
    first, *others = module.split("|")
    package = first.rsplit(".", 1)[0]
    return [first, *(f"{package}.{other}" for other in others)]


def check_command(command: Command) -> list[str]:
    """Problems with one command; commands of other programs (pip, pytest, git, cp, ...) have none."""
    words = command.words
    program = words[0]
    if program == "unimask":
        return check_unimask(words[1:])
    if program in ("torchrun", "deepspeed"):
        for index, word in enumerate(words[:-1]):
            if word in ("-m", "--module") and words[index + 1] == "unimask.cli":
                return check_unimask(words[index + 2:])
        return []
    if program not in ("python", "python3") or len(words) < 2:
        return []
    if words[1] == "-m" and len(words) > 2 and words[2].startswith("unimask"):
        if words[2] == "unimask.cli":
            return check_unimask(words[3:])
        problems = []
        for module in module_alternatives(words[2]):
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                problems.append(f"no module {module}")
            else:
                problems += check_script(Path(spec.origin).read_text(), module, words[3:])
        return problems
    if words[1].endswith(".py") and not is_placeholder(Path(words[1]).stem):  # `benchmarks/NAME.py` is any script
        script = REPO_ROOT / words[1]
        if not script.is_file():
            return [f"no file {words[1]}"]
        return check_script(script.read_text(), words[1], words[2:])
    return []


def command_problems(text: str, page: str) -> list[str]:
    return [f"{command.where}: {' '.join(command.words)}: {problem}"
            for command in commands_in(text, page) for problem in check_command(command)]


# ---------------------------------------------------------------------------------------------------------------------
# Checking links


def link_problems(text: str, page: Path) -> list[str]:
    """Broken relative links of the page `text` (found at `page`, which its links are relative to)."""
    _, prose = split_code(text)
    prose = INLINE_CODE.sub("", prose)
    problems = []
    for number, line in enumerate(prose.splitlines(), start=1):
        for target in LINK.findall(line) + IMG_SRC.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            where = f"{page.name}:{number}: {target}"
            file = (page.parent / path).resolve()
            if path and not file.exists():
                problems.append(f"{where}: no file {file.relative_to(REPO_ROOT)}")
                continue
            if anchor and (not path or file.suffix == ".md"):
                target_text = file.read_text() if path else text
                if anchor not in anchors_of(target_text):
                    problems.append(f"{where}: {file.name if path else page.name} has no heading with the anchor "
                                    f"#{anchor}")
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# The tests on the real pages


def test_the_pages_exist_and_hold_commands():
    # Guard the reading itself: if the pages were misread the checks below would pass on nothing.
    assert len(DOC_PAGES) > 5, DOC_PAGES
    names = {command.words[0] for page in DOC_PAGES for command in commands_in(page.read_text(), page.name)}
    assert {"unimask", "python", "pip"} <= names, names


def test_every_command_named_in_the_docs_exists():
    problems = [problem for page in DOC_PAGES
                for problem in command_problems(page.read_text(), page.relative_to(REPO_ROOT).as_posix())]
    assert not problems, f"{len(problems)} command(s) that do not exist as written:\n" + "\n".join(problems)


def test_every_relative_link_in_the_docs_resolves():
    problems = [problem for page in DOC_PAGES for problem in link_problems(page.read_text(), page)]
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------------
# Self-test: the same functions on a made-up page, so the checks are known to pass on good commands and links and to
# fail on each kind of typo.


GOOD_PAGE = """# A page

## Set up, run

```bash
unimask data digits --out data/digits
OMP_NUM_THREADS=1 python benchmarks/act_latency.py --checkpoint runs/q/model \\
    --data runs/q/data
unimask eval CKPT --task vla --delay d [--inpaint]
torchrun --nproc_per_node 2 -m unimask.cli train --config c.yaml
```

Run `unimask quickstart --mode quick`, then `python -m unimask.demos.caption_image|decode_actions --checkpoint DIR`;
`pip install -e .` is not ours. See [the layout](docs/layout.md), [set-up](#set-up-run) and
[architecture](docs/architecture.md#layers).
"""


def test_self_test_good_commands_and_links_pass():
    assert command_problems(GOOD_PAGE, "page.md") == []
    assert link_problems(GOOD_PAGE, REPO_ROOT / "page.md") == []
    assert len([c for c in commands_in(GOOD_PAGE, "p") if c.words[0] in ("unimask", "python", "torchrun")]) == 6


def test_self_test_each_typo_fails():
    page = GOOD_PAGE.replace("data digits", "data digitz").replace("--delay d", "--dealy d")
    page = page.replace("act_latency.py --checkpoint", "act_latency.py --chekpoint")
    page = page.replace("--nproc_per_node 2 -m unimask.cli train", "--nproc_per_node 2 -m unimask.cli trian")
    page = page.replace("caption_image|decode_actions", "caption_image|decode_action")
    page = page.replace("docs/layout.md", "docs/layuot.md").replace("#layers", "#layer")
    page = page.replace("(#set-up-run)", "(#setup-run)")
    problems = command_problems(page, "page.md")
    assert len(problems) == 5, "\n".join(problems)
    assert "`unimask data` has no subcommand 'digitz'" in problems[0]
    assert "benchmarks/act_latency.py has no option --chekpoint" in problems[1]
    assert "`unimask eval` has no option --dealy" in problems[2]
    assert "`unimask` has no subcommand 'trian'" in problems[3]
    assert "no module unimask.demos.decode_action" in problems[4]
    links = link_problems(page, REPO_ROOT / "page.md")
    assert [problem.split(": ", 2)[2] for problem in links] == [
        "no file docs/layuot.md", "page.md has no heading with the anchor #setup-run",
        "architecture.md has no heading with the anchor #layer"], links


def test_self_test_anchors_follow_github():
    text = "# Results\n\n## Speed of `act`, 1 step\n\n## Results\n\n```\n# not a heading\n```\n"
    assert anchors_of(text) == {"results", "speed-of-act-1-step", "results-1"}


# ---------------------------------------------------------------------------------------------------------------------
# What the pages say


# Words of a page about how the project was made or by whom; the pages speak of the software, its measurements and
# their commands only.
MAKING_OF = re.compile(r"\b(session|sessions|the issue|asked for|helpers?|was run by|we|our|us)\b", re.IGNORECASE)


def test_no_page_tells_how_the_work_was_done():
    found = [f"{page.name}:{number}: {line.strip()}" for page in DOC_PAGES
             for number, line in enumerate(page.read_text().splitlines(), start=1) if MAKING_OF.search(line)]
    assert not found, "lines about how the project was made, not about the software:\n" + "\n".join(found)


def test_the_sequence_settings_table_lists_every_declared_key_with_its_default():
    from unimask.processor import declared_settings

    table = (REPO_ROOT / "docs" / "training.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+?) \|", table, re.MULTILINE))
    declared = declared_settings()
    assert set(rows) == set(declared), (sorted(rows), sorted(declared))
    assert {name: "unset" if setting.default is None else str(setting.default)
            for name, setting in declared.items()} == rows
