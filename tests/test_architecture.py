"""The package's import graph stays layered and acyclic (issue #12; the layers are described in docs/architecture.md).

Every .py file of the folders that pyproject.toml maps into `unimask` ([tool.setuptools.package-dir]) is parsed with
`ast` -- nothing is imported -- and every import of a `unimask` module becomes an edge of a module graph. Then:

* a module may import modules of its own layer or of lower layers only (LAYERS below, lowest first);
* no set of modules may import each other in a cycle, lazy imports inside functions included;
* no module file is longer than MAX_MODULE_LINES.

What counts as an import (the rules the graph functions implement):

* `import unimask.a.b` and `from unimask.a import b` where `unimask.a.b` is a module (or a package) import
  `unimask.a.b`; `from unimask.a import name` where `name` is not a module imports `unimask.a`.
* Relative imports (`from .x import y`, `from ..format import z`, `from . import suite`) are resolved against the
  importing module's package (for an `__init__.py`, the package itself).
* Imports anywhere in the file count: inside functions (a lazy cycle is still a cycle, it only shows up later) and
  under `if TYPE_CHECKING:` (an annotation that names a module is still a dependency on it).
* Importing `unimask.a.b` does NOT count as importing `unimask.a`'s `__init__`, although Python runs it first: the
  design rule is about the modules that name each other, and counting the implicit parent would put every module
  under `unimask` into one cycle with `unimask/__init__.py`, which re-exports the core classes.
* Imports by string (`importlib.import_module("unimask.training.trainer")`) are invisible to `ast`. That is intended:
  `unimask.cli` names every command module that way, at the top layer.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_PACKAGE = "unimask"

# The layers, lowest first; keep in step with docs/architecture.md. A pattern is an exact module name or "prefix.*",
# which matches the prefix itself and everything below it. The most specific pattern wins: an exact name beats any
# prefix, a longer prefix beats a shorter one (so "unimask.cli" is the cli layer, not core, and
# "unimask.training.trainer" is training, not core).
LAYERS = [
    ("leaf", ["unimask.atomic", "unimask.errors", "unimask.modality", "unimask.config"]),
    ("tokenizers", ["unimask.tokenizers.*"]),
    # Every module of unified/ not named elsewhere, unimask/__init__.py and unimask.schedulers.* included.
    ("core", ["unimask.*"]),
    ("training", ["unimask.training.*"]),
    ("demos", ["unimask.demos.*"]),
    # The command line names every command module (through importlib, which ast does not see).
    ("cli", ["unimask.cli"]),
]

# The catch-all pattern of the core layer. It is meant for the modules of unified/ only: a module from another
# folder that lands on it (a new top-level folder in package-dir) has no layer yet and fails the layer test.
CORE_CATCH_ALL = "unimask.*"

# The issue says "no package module is longer than about 400 lines".
MAX_MODULE_LINES = 420


@dataclass(frozen=True)
class ModuleSource:
    name: str  # dotted module name, e.g. "unimask.training.data.loader"
    path: str  # shown in messages, e.g. "training/data/loader.py"
    source: str
    is_package: bool  # an __init__.py: its relative imports resolve against itself
    mapped_root: str  # the package-dir key whose folder holds the file, e.g. "unimask.training"


@dataclass(frozen=True)
class ImportEdge:
    importer: str
    imported: str
    path: str
    line: int


# ---------------------------------------------------------------------------------------------------------------------
# Reading the package


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """The package -> folder table of [tool.setuptools.package-dir], e.g. {"unimask.training": REPO_ROOT/"training"}."""
    table = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {package: pyproject.parent / folder for package, folder in table.items()}


def read_modules(repo_root: Path, mapping: dict[str, Path]) -> dict[str, ModuleSource]:
    """Every .py file under the mapped folders, keyed by its module name."""
    # A file under nested mapped folders belongs to the deepest one; sort shallow to deep so the deepest wins.
    owner: dict[Path, str] = {}
    for package, folder in sorted(mapping.items(), key=lambda item: len(item[1].resolve().parts)):
        for file in folder.rglob("*.py"):
            if not any(part.startswith((".", "__pycache__")) for part in file.relative_to(folder).parts):
                owner[file.resolve()] = package
    modules = {}
    for file, package in sorted(owner.items()):
        parts = list(file.relative_to(mapping[package].resolve()).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join([package, *parts])
        modules[name] = ModuleSource(name=name, path=file.relative_to(repo_root.resolve()).as_posix(),
                                     source=file.read_text(), is_package=is_package, mapped_root=package)
    return modules


# ---------------------------------------------------------------------------------------------------------------------
# The import graph


def known_names(modules: dict[str, ModuleSource]) -> set[str]:
    """Module names plus every package above them (unimask.tokenizers has no __init__.py but is a package)."""
    names = set()
    for name in modules:
        parts = name.split(".")
        names.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return names


def resolve_relative(module: ModuleSource, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` written in `module`."""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level > len(package):
        raise ValueError(f"{module.path}: relative import with {level} dots goes above the top-level package")
    base = package[:len(package) - level + 1]
    return ".".join(base + ([target] if target else []))


def is_ours(name: str) -> bool:
    return name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".")


def import_edges(modules: dict[str, ModuleSource]) -> list[ImportEdge]:
    """Every import of a unimask module by a unimask module, with the line that makes it."""
    names = known_names(modules)
    edges = []
    for module in modules.values():
        tree = ast.parse(module.source, filename=module.path)
        # ast.walk reaches imports in functions, classes, try/except and `if TYPE_CHECKING:` alike: they all count.
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve_relative(module, node.level, node.module) if node.level else node.module
                # `from pkg import name` imports the module pkg.name if there is one, else it takes a name from pkg.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base
                           for alias in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):  # `from pkg import a, b` (two names of pkg) is one edge
                if is_ours(target):
                    edges.append(ImportEdge(module.name, target, module.path, node.lineno))
    return edges


def edge_locations(edges: list[ImportEdge]) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> ["file:line", ...], for messages that point at the lines to change."""
    locations = defaultdict(list)
    for edge in sorted(edges, key=lambda e: (e.importer, e.imported, e.line)):
        locations[(edge.importer, edge.imported)].append(f"{edge.path}:{edge.line}")
    return locations


# ---------------------------------------------------------------------------------------------------------------------
# Layers


def layer_of(name: str) -> tuple[int, str, str]:
    """(layer index, layer name, the pattern that matched) for a module name."""
    best = None
    for index, (layer, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                prefix = pattern[:-2]
                matches = name == prefix or name.startswith(prefix + ".")
                specificity = (0, len(prefix))
            else:
                matches = name == pattern
                specificity = (1, len(pattern))
            if matches and (best is None or specificity > best[0]):
                best = (specificity, index, layer, pattern)
    if best is None:
        raise ValueError(f"{name} matches no layer in LAYERS")
    return best[1], best[2], best[3]


def unlayered_modules(modules: dict[str, ModuleSource]) -> list[str]:
    """Modules from a folder other than the root package's that only the core catch-all matched: they need a layer."""
    problems = []
    for module in modules.values():
        if layer_of(module.name)[2] == CORE_CATCH_ALL and module.mapped_root != ROOT_PACKAGE:
            problems.append(f"{module.name} ({module.path}, mapped from package-dir {module.mapped_root!r}) has no "
                            "layer: add it to LAYERS in tests/test_architecture.py and to docs/architecture.md")
    return problems


def layer_violations(edges: list[ImportEdge]) -> list[str]:
    """One line per import from a lower layer to a higher one: "importer (layer) -> imported (layer)  file:line"."""
    problems = []
    for (importer, imported), where in edge_locations(edges).items():
        importer_index, importer_layer, _ = layer_of(importer)
        imported_index, imported_layer, _ = layer_of(imported)
        if imported_index > importer_index:
            problems.append(f"{importer} ({importer_layer}) -> {imported} ({imported_layer})  {', '.join(where)}")
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# Cycles


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to worry about), over every node of `graph`."""
    index_of: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for root in sorted(graph):
        if root in index_of:
            continue
        index_of[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index_of:
                    index_of[successor] = lowlink[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index_of[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first), to show the cycle in order."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for successor in sorted(graph.get(node, ())):
                if successor not in within:
                    continue
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if successor not in previous:
                    previous[successor] = node
                    next_frontier.append(successor)
        frontier = next_frontier
    raise AssertionError(f"{start} is on no cycle inside {sorted(within)}")


def find_cycles(edges: list[ImportEdge]) -> list[str]:
    """One report per cycle: components of more than one module, and modules that import themselves."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    locations = edge_locations(edges)
    reports = []
    for component in strongly_connected_components(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], ()):
            continue  # a lone module that does not import itself is no cycle
        lines = [f"cycle among {len(component)} module(s): {' -> '.join(shortest_cycle(graph, component[0], members))}"]
        # Every import inside the component: cutting enough of these lines breaks the cycle.
        for (importer, imported), where in locations.items():
            if importer in members and imported in members:
                lines.append(f"    {importer} -> {imported}  {', '.join(where)}")
        reports.append("\n".join(lines))
    return reports


# ---------------------------------------------------------------------------------------------------------------------
# Module size


def long_modules(modules: dict[str, ModuleSource], limit: int) -> list[str]:
    counts = ((module.path, len(module.source.splitlines())) for module in modules.values())
    return [f"{path}: {count} lines" for path, count in sorted(counts, key=lambda item: -item[1]) if count > limit]


# ---------------------------------------------------------------------------------------------------------------------
# The tests on the real tree


@pytest.fixture(scope="module")
def package_modules() -> dict[str, ModuleSource]:
    modules = read_modules(REPO_ROOT, package_dirs(REPO_ROOT / "pyproject.toml"))
    # Guard the walk itself: if the mapping were misread the checks below would pass on nothing.
    assert ROOT_PACKAGE in modules and f"{ROOT_PACKAGE}.cli" in modules, sorted(modules)
    return modules


def test_imports_go_down_the_layers(package_modules):
    problems = unlayered_modules(package_modules) + layer_violations(import_edges(package_modules))
    assert not problems, (f"{len(problems)} import(s) from a lower layer to a higher one (layers, low to high: "
                          f"{', '.join(name for name, _ in LAYERS)}; see docs/architecture.md):\n"
                          + "\n".join(problems))


def test_no_import_cycles(package_modules):
    cycles = find_cycles(import_edges(package_modules))
    assert not cycles, f"{len(cycles)} import cycle(s), lazy imports included:\n" + "\n".join(cycles)


def test_no_module_is_too_long(package_modules):
    offenders = long_modules(package_modules, MAX_MODULE_LINES)
    assert not offenders, f"modules longer than {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


# ---------------------------------------------------------------------------------------------------------------------
# Self-test: the same functions on made-up sources, so the checks are known to pass on a clean graph and to fail
# on a cycle or an upward import (the real tree may be clean or not at any given time).


def synthetic_modules(sources: dict[str, str]) -> dict[str, ModuleSource]:
    """Module name -> source; a name ending in ".__init__" is a package's __init__.py."""
    modules = {}
    for key, source in sources.items():
        is_package = key.endswith(".__init__")
        name = key.removesuffix(".__init__")
        root = next(package for package in ("unimask.training", "unimask.demos", "unimask.tokenizers", "unimask")
                    if name == package or name.startswith(package + "."))
        modules[name] = ModuleSource(name=name, path=key.replace(".", "/") + ".py", source=source,
                                     is_package=is_package, mapped_root=root)
    return modules


CLEAN_SOURCES = {
    "unimask.__init__": "from .model import Model\n",
    "unimask.atomic": "import os\n",
    "unimask.config": "from .atomic import write\n",
    "unimask.model": ("from .atomic import write\n"
                      "def load():\n"
                      "    from unimask.tokenizers.text import decode\n"),
    "unimask.schedulers.__init__": "from .base import Scheduler\n",
    "unimask.schedulers.base": "from ..model import Model\n",
    "unimask.tokenizers.text": "from unimask.atomic import write\nfrom unimask import config\n",
    "unimask.tokenizers.action.__init__": "from .base import ActionTokenizer\n",
    "unimask.tokenizers.action.base": "from ..text import decode\n",
    "unimask.training.__init__": "",
    "unimask.training.trainer": "from unimask import model\nfrom . import memory\nimport unimask.schedulers.base\n",
    "unimask.training.memory": "from unimask.model import Model\n",
    "unimask.training.data.__init__": "",
    "unimask.training.data.format": "from unimask.tokenizers import action\n",
    "unimask.training.data.writers.__init__": "",
    "unimask.training.data.writers.digits": "from ..format import FORMAT\nfrom ...trainer import train\n",
    "unimask.demos.__init__": "",
    "unimask.demos.plots": "from unimask.training.trainer import train\n",
    "unimask.cli": "import importlib\nfrom unimask import __version__\nfrom unimask.demos import plots\n",
}


def edge_set(modules):
    return {(edge.importer, edge.imported) for edge in import_edges(modules)}


def test_self_test_imports_are_resolved():
    edges = edge_set(synthetic_modules(CLEAN_SOURCES))
    expected = {
        ("unimask", "unimask.model"),  # from .model import Model, in an __init__.py
        ("unimask.model", "unimask.tokenizers.text"),  # lazy, inside a function
        ("unimask.schedulers.base", "unimask.model"),  # from ..model
        ("unimask.tokenizers.text", "unimask.config"),  # from unimask import config: config is a module
        ("unimask.tokenizers.action.base", "unimask.tokenizers.text"),  # from ..text, across a folder without __init__
        ("unimask.training.trainer", "unimask.model"),
        ("unimask.training.trainer", "unimask.training.memory"),  # from . import memory
        ("unimask.training.trainer", "unimask.schedulers.base"),  # import a.b.c is a.b.c, not its parents
        ("unimask.training.data.format", "unimask.tokenizers.action"),
        ("unimask.training.data.writers.digits", "unimask.training.data.format"),  # from ..format
        ("unimask.training.data.writers.digits", "unimask.training.trainer"),  # from ...trainer
        ("unimask.cli", "unimask"),  # from unimask import __version__: a name, so the package
    }
    assert expected <= edges, expected - edges
    assert ("unimask.training.trainer", "unimask") not in edges
    assert ("unimask.training.trainer", "unimask.schedulers") not in edges


def test_self_test_clean_graph_passes():
    modules = synthetic_modules(CLEAN_SOURCES)
    edges = import_edges(modules)
    assert unlayered_modules(modules) == []
    assert layer_violations(edges) == []
    assert find_cycles(edges) == []
    assert long_modules(modules, MAX_MODULE_LINES) == []


def test_self_test_cycles_fail():
    sources = dict(CLEAN_SOURCES)
    # A lazy import back into the trainer closes trainer -> memory -> trainer.
    sources["unimask.training.memory"] = "def peak():\n    from .trainer import train\n"
    # A three-module cycle in core, one edge of it under TYPE_CHECKING.
    sources["unimask.sampler"] = "from .pipeline import Pipeline\n"
    sources["unimask.pipeline"] = "from .bundle import Bundle\n"
    sources["unimask.bundle"] = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sampler import run\n"
    # A module that imports itself.
    sources["unimask.masking"] = "import unimask.masking\n"
    cycles = find_cycles(import_edges(synthetic_modules(sources)))
    assert len(cycles) == 3, "\n".join(cycles)
    heads = sorted(report.splitlines()[0] for report in cycles)
    assert heads == [
        "cycle among 1 module(s): unimask.masking -> unimask.masking",
        "cycle among 2 module(s): unimask.training.memory -> unimask.training.trainer -> unimask.training.memory",
        "cycle among 3 module(s): unimask.bundle -> unimask.sampler -> unimask.pipeline -> unimask.bundle",
    ], heads
    memory_cycle = next(report for report in cycles if "training.memory ->" in report)
    assert "unimask.training.memory -> unimask.training.trainer  unimask/training/memory.py:2" in memory_cycle


def test_self_test_upward_imports_fail():
    sources = dict(CLEAN_SOURCES)
    sources["unimask.atomic"] = "from .vocab import VOCAB\n"  # leaf -> core
    sources["unimask.tokenizers.text"] = "from unimask.vocab import UnifiedVocab\n"  # tokenizers -> core
    sources["unimask.training.report"] = "def draw():\n    from unimask.demos.plots import plot\n"  # lazy, up
    sources["unimask.model"] = "from unimask.cli import main\n"  # core -> cli (cli is not core despite its folder)
    sources["unimask.vocab"] = ""
    problems = layer_violations(import_edges(synthetic_modules(sources)))
    assert problems == [
        "unimask.atomic (leaf) -> unimask.vocab (core)  unimask/atomic.py:1",
        "unimask.model (core) -> unimask.cli (cli)  unimask/model.py:1",
        "unimask.tokenizers.text (tokenizers) -> unimask.vocab (core)  unimask/tokenizers/text.py:1",
        "unimask.training.report (training) -> unimask.demos.plots (demos)  unimask/training/report.py:2",
    ], problems


def test_self_test_new_top_level_folder_needs_a_layer():
    modules = synthetic_modules(CLEAN_SOURCES)
    modules["unimask.serving.api"] = ModuleSource(name="unimask.serving.api", path="serving/api.py", source="",
                                                  is_package=False, mapped_root="unimask.serving")
    assert [problem.split(" ")[0] for problem in unlayered_modules(modules)] == ["unimask.serving.api"]


def test_self_test_long_module_fails():
    modules = synthetic_modules({"unimask.big": "x = 1\n" * (MAX_MODULE_LINES + 1), "unimask.small": "x = 1\n"})
    assert long_modules(modules, MAX_MODULE_LINES) == [f"unimask/big.py: {MAX_MODULE_LINES + 1} lines"]


# ---------------------------------------------------------------------------------------------------------------------
# The demos are users of the library: they import the top-level package and the public modules docs/demo.md names


DEMO_PACKAGE = "unimask.demos"
DEMO_PUBLIC_MODULES = {"unimask", "unimask.training.envs", "unimask.training.plots", "unimask.training.samples"}


def private_demo_imports(modules: dict[str, ModuleSource]) -> list[str]:
    """One line per import by a demo module of a unimask module that is neither public nor a demo module."""
    return [f"{edge.importer} -> {edge.imported}  {edge.path}:{edge.line}" for edge in import_edges(modules)
            if layer_of(edge.importer)[1] == "demos" and edge.imported not in DEMO_PUBLIC_MODULES
            and not (edge.imported == DEMO_PACKAGE or edge.imported.startswith(DEMO_PACKAGE + "."))]


def test_demos_import_only_public_entry_points(package_modules):
    problems = private_demo_imports(package_modules)
    assert not problems, (f"{len(problems)} demo import(s) of a module that is not a public entry point "
                          f"({sorted(DEMO_PUBLIC_MODULES)}, docs/demo.md):\n" + "\n".join(problems))
    demo_doc = (REPO_ROOT / "docs" / "demo.md").read_text()
    for name in sorted(DEMO_PUBLIC_MODULES - {ROOT_PACKAGE}):
        assert f"`{name}`" in demo_doc, f"docs/demo.md does not name the public module {name}"
        tree = ast.parse(package_modules[name].source)
        exported = [node for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets)]
        assert exported, f"{package_modules[name].path} has no __all__: a public module lists what it exports"


def test_self_test_private_demo_imports_fail():
    sources = {key: value for key, value in CLEAN_SOURCES.items() if key != "unimask.demos.plots"}
    sources["unimask.registry"] = ""
    sources["unimask.training.envs.__init__"] = ""
    sources["unimask.training.evaluation.robot"] = ""
    sources["unimask.demos.app"] = ("from unimask import Model\n"  # a name of the top-level package: public
                                    "from unimask.training import envs\n"  # a public module
                                    "from .batching import Batcher\n"  # the demos' own module
                                    "from unimask import registry\n"  # a core module, not the package
                                    "def robot():\n"
                                    "    from unimask.training.evaluation import robot\n")  # lazy, still private
    sources["unimask.demos.batching"] = ""
    assert private_demo_imports(synthetic_modules(sources)) == [
        "unimask.demos.app -> unimask.registry  unimask/demos/app.py:4",
        "unimask.demos.app -> unimask.training.evaluation.robot  unimask/demos/app.py:6",
    ]


def trainer_calls_in_core(modules: dict) -> list[str]:
    """Places where a core module (unified/) names a training engine or drives an optimisation step itself: the core
    computes the loss of a batch; backward, optimizer steps and accumulation belong to training/."""
    problems = []
    for name, module in sorted(modules.items()):
        if layer_of(name)[1] != "core":
            continue
        for node in ast.walk(ast.parse(module.source)):
            called = node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
            receiver = ast.unparse(node.func.value).lower() if called else ""
            named = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            # A scheduler's `step` is decoding; an optimizer's (or an engine's) is training.
            if called in ("backward", "zero_grad") or (called == "step" and "optim" in receiver) \
                    or (named or "").lower().endswith("engine"):
                problems.append((name, node.lineno, called or named))
    return [f"{name}:{line} {what}" for name, line, what in sorted(problems)]


def test_the_core_knows_no_trainer(package_modules):
    problems = trainer_calls_in_core(package_modules)
    assert not problems, "the core drives training (engines, backward, optimizer steps): " + ", ".join(problems)


def test_self_test_a_core_training_step_fails():
    sources = dict(CLEAN_SOURCES)
    sources["unimask.masking"] = ("def train_step(engine, loss, optimizer, scheduler):\n"
                                  "    engine.backward(loss)\n"
                                  "    scheduler.step(loss)\n"  # a decoding scheduler: allowed
                                  "    optimizer.step()\n")
    assert trainer_calls_in_core(synthetic_modules(sources)) == [
        "unimask.masking:2 backward", "unimask.masking:2 engine", "unimask.masking:4 step"]
