"""Bad command-line input for `unimask train|eval|data|export|demo`, generated with hypothesis, and a sandbox that
runs each case in-process (`unimask.cli.main`) and says how the command answered.

Every generated case is bad: a config key or an option outside its documented range or type, a file that is not
there, or a relation that cannot hold (executed actions the action chunk cannot cover). The only good answer is a
refusal: exit status 2 with a message that names the input (its key, option or value) and no traceback. The
sandbox replaces the work each command would start (training, rollouts, dataset writing, the web server) with a
stub that raises `Accepted`, so a bad value that gets through is seen at once instead of starting real work.

Used by tests/test_fuzz_cli.py (a few hundred cases by default, more with -m slow) and benchmarks/fuzz_cli.py
(the counts over 1,000+ cases).
"""

from __future__ import annotations

import contextlib
import io
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

# ----- the documented ranges, written out here (not read from the package) so the test checks the package ---------
TRAIN_INTS = {  # dotted key: (low, high); None is unbounded
    "train.steps": (1, None), "train.seed": (0, 2**32 - 1), "train.log_every": (1, None),
    "train.sample_every": (0, None), "train.checkpoint_every": (1, None), "train.keep_last": (0, None),
    "train.ranks": (0, 256), "train.max_nonfinite_steps": (1, None), "optim.warmup": (0, None),
    "optim.grad_accum": (1, 4096), "init.lora_rank": (0, None), "data.batch_size": (1, 65536),
    "data.num_workers": (0, 256), "data.shuffle_buffer": (0, 10**6), "data.image_batch": (1, 4096),
    "data.seed": (0, 2**32 - 1), "model.d_model": (1, 65536), "model.n_layers": (1, 1024),
    "model.n_heads": (1, 1024), "model.max_seq_len": (1, 2**20), "model.ffn_hidden": (1, 2**20),
    "sequence.caption_length": (2, 65536), "sequence.max_condition_text": (1, 65536),
    "sequence.action_horizon": (1, 65536), "sequence.action_dim": (1, 65536),
    "masking.target_copies.i2t": (1, 64),
}
TRAIN_FLOATS = {  # dotted key: (low, high, open_low, open_high)
    "optim.lr": (0, None, True, False), "optim.min_lr_ratio": (0, 1, False, False),
    "optim.weight_decay": (0, None, False, False), "optim.grad_clip": (0, None, False, False),
    "optim.ema": (0, 1, False, True), "init.lora_alpha": (0, None, True, False),
    "init.lora_dropout": (0, 1, False, True), "train.peak_flops": (0, None, False, False),
    "model.rope_theta": (0, None, True, False), "model.norm_eps": (0, 1, True, False),
    "model.dropout": (0, 1, False, True), "model.init_std": (0, 1, True, False),
    "masking.eps": (0, 1, True, True), "masking.p_uncond": (0, 1, False, True),
    "masking.condition_dropout.t2i": (0, 1, False, True), "masking.full_mask.i2t": (0, 1, False, False),
    "masking.task_weights.t2i": (0, None, False, False),
}
TRAIN_CHOICES = {"train.precision": ("auto", "fp32", "bf16"), "train.device": ("auto", "cpu", "cuda"),
                 "model.attention": ("prefix", "full"), "data.split_by": ("auto", "shard", "sample"),
                 "masking.schedules.image": ("linear", "cosine", "pow2")}
TRAIN_OTHER = [  # (override, what the refusal must name)
    ("data.streams=[]", "data.streams"), ("data.streams=5", "data.streams"),
    ("data.streams=[{dataset: /nowhere/at/all, task: t2i}]", "data.streams"),
    ("data.streams=[{dataset: d, task: poem}]", "data.streams[0].task"),
    ("data.streams=[{dataset: d, task: t2i, weight: 0}]", "data.streams[0].weight"),
    ("tokenizers.text=/nowhere/at/all", "tokenizers.text"), ("tokenizers.poem=x", "tokenizers.poem"),
    ("optim.betas=[0.9]", "optim.betas"), ("optim.betas=[0.9, 1.0]", "optim.betas"),
    ("model.d_model=30", "model.d_model"), ("model.n_kv_heads=3", "n_kv_heads"), ("model.vocab_size=7", "vocab_size"),
    ("model.max_seq_len=50", "model.max_seq_len"), ("masking.target_copies.i2t=3", "model.max_seq_len"),
    ("model.encoders={pixels: {tokens: 15}}", "model.encoders.pixels"), ("train.out=''", "train.out"),
    ("train.stepz=3", "stepz"), ("optim.learning_rate=0.1", "learning_rate"), ("optimizer.lr=0.1", "optimizer"),
    ("train.steps", "train.steps"), ("train.steps=[", "train.steps"), ("train=5", "train"),
    ("model.init_from=x", "init.causal_lm"),
]
EVAL_INTS = {"--episodes": (1, 1000), "--workers": (0, 256), "--execute-steps": (0, 1024),
             "--action-steps": (0, 1024), "--delay": (0, 1024), "--limit": (1, 100_000), "--epochs": (0, 1000)}
DATA_INTS = {  # command: {option: (low, high)}
    "digits": {"--image-size": (8, 1024), "--shard-size": (1, 10**6), "--seed": (0, 2**32 - 1)},
    "shapes": {"--image-size": (32, 1024), "--train": (1, 10**7), "--test": (1, 10**7), "--max-objects": (1, 3)},
    "metaworld": {"--image-size": (8, 1024), "--train-episodes": (0, 10**7), "--horizon": (1, 1024),
                  "--max-steps": (1, 10**5), "--workers": (0, 256)},
    "folder": {"--image-size": (0, 1024), "--horizon": (1, 1024)},
    "lerobot": {"--image-size": (0, 1024), "--episodes": (1, 10**7)},
    "pretokenize": {"--batch-size": (1, 4096), "--action-length": (1, 2**16)},
    "inspect": {"--samples": (1, 1024)},
}
DATA_REQUIRED = {"digits": [], "shapes": [], "metaworld": [], "folder": ["--images", "x", "--captions", "c.csv"],
                 "lerobot": ["--root", "r"], "pretokenize": ["--in", "i"], "inspect": []}
DEMO_INTS = {"--port": (1, 65535), "--max-batch": (1, 256), "--max-pending": (1, 10_000)}
NOT_NUMBERS = ["abc", "true", "null", "[1, 2]", "{a: 1}", "''", "1.5e", "--", "\u00e9t\u00e9", "0x"]


@dataclass
class Case:
    command: str  # train, eval, data, export or demo
    argv: list[str]  # after `unimask`
    mention: str  # what the refusal must name: a dotted key, an option, or the bad value


@dataclass
class Outcome:
    kind: str  # refused | unclear (refused, naming something else) | accepted | exit-0 | traceback
    seconds: float
    message: str


class Accepted(Exception):
    """The command got past its checks and was about to start its work."""


# ----- values -----------------------------------------------------------------------------------------------------
def bad_ints(low: int, high: int | None, *, integers_only: bool = False) -> st.SearchStrategy[str]:
    """Text of integers outside [low, high], and (unless `integers_only`) of things that are not integers."""
    options = [st.integers(min_value=-(10**12), max_value=low - 1)]
    if high is not None:
        options.append(st.integers(min_value=high + 1, max_value=high + 10**12))
    values = st.one_of(*options).map(str)
    if integers_only:
        return values
    floats = st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer()).map(repr)
    return st.one_of(values, floats, st.sampled_from(NOT_NUMBERS))


def bad_floats(low: float, high: float | None, open_low: bool, open_high: bool) -> st.SearchStrategy[str]:
    """Text of numbers outside the range (its open ends included), of NaN and infinities, and of non-numbers."""
    below = st.floats(max_value=low, allow_nan=False, allow_infinity=False).filter(
        lambda x: x < low or (open_low and x == low))
    options = [below, st.sampled_from([".nan", ".inf", "-.inf", "nan", "1e400", "-1e400"] + NOT_NUMBERS[::2])]
    if high is not None:
        options.append(st.floats(min_value=high, allow_nan=False, allow_infinity=False).filter(
            lambda x: x > high or (open_high and x == high)))
    return st.one_of(*options).map(lambda v: v if isinstance(v, str) else repr(v))


def bad_choice(choices: tuple[str, ...]) -> st.SearchStrategy[str]:
    words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
    return st.one_of(words.filter(lambda w: w not in choices), st.sampled_from(["5", "[auto]", "null", "true"]))


# ----- cases ------------------------------------------------------------------------------------------------------
@st.composite
def train_cases(draw, config: str) -> Case:
    kind = draw(st.sampled_from(["int"] * 4 + ["float"] * 3 + ["choice", "other", "flag"]))
    if kind == "int":
        key = draw(st.sampled_from(sorted(TRAIN_INTS)))
        return Case("train", ["train", "--config", config, f"{key}={draw(bad_ints(*TRAIN_INTS[key]))}"], key)
    if kind == "float":
        key = draw(st.sampled_from(sorted(TRAIN_FLOATS)))
        return Case("train", ["train", "--config", config, f"{key}={draw(bad_floats(*TRAIN_FLOATS[key]))}"], key)
    if kind == "choice":
        key = draw(st.sampled_from(sorted(TRAIN_CHOICES)))
        return Case("train", ["train", "--config", config, f"{key}={draw(bad_choice(TRAIN_CHOICES[key]))}"], key)
    if kind == "other":
        override, mention = draw(st.sampled_from(TRAIN_OTHER))
        return Case("train", ["train", "--config", config, override], mention)
    flag = draw(st.sampled_from(["--stop-after", "--world-size", "--lora-rank", "--init-from", "--config"]))
    if flag == "--init-from":
        return Case("train", ["train", "--config", config, "--init-from", "/nowhere/bundle"], "init.bundle")
    if flag == "--config":
        return Case("train", ["train", "--config", "/nowhere/config.yaml"], "/nowhere/config.yaml")
    value = draw(bad_ints(0, 10**6 if flag == "--world-size" else None))
    dry = ["--dry-run"] * (flag == "--world-size")
    return Case("train", ["train", "--config", config, *dry, f"{flag}={value}"], flag)


@st.composite
def eval_cases(draw, bundle: str, data: str, out: str) -> Case:
    base = ["eval", bundle, "--task", "vla", "--data", data, "--out", out, "--execute-steps", "1", "--workers", "1"]
    kind = draw(st.sampled_from(["range"] * 5 + ["relation", "other"]))
    if kind == "range":
        flag = draw(st.sampled_from(sorted(EVAL_INTS)))
        return Case("eval", [*base, f"{flag}={draw(bad_ints(*EVAL_INTS[flag]))}"], flag)
    if kind == "relation":  # the tiny bundle's chunks hold 2 actions of 4 codes each
        flag, low, mention = draw(st.sampled_from([("--execute-steps", 3, "--execute-steps"), ("--delay", 1, "delay"),
                                                   ("--action-steps", 9, "--action-steps")]))
        return Case("eval", [*base, f"{flag}={draw(st.integers(low, 1024))}"], mention)
    case = draw(st.sampled_from(["seeds-text", "seeds-range", "task", "inpaint", "target"]))
    if case == "seeds-text":
        return Case("eval", [*base, "--seeds", draw(st.sampled_from(["a,b", "1,,2", "1.5", "one", "1;2"]))], "--seeds")
    if case == "seeds-range":
        seed = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=10**4)))
        return Case("eval", [*base, f"--seeds=1,{seed}"], "--seeds")
    if case == "task":
        task = draw(bad_choice(("caption", "t2i", "shapes", "vla", "clip", "all")).filter(lambda t: "," not in t))
        return Case("eval", [*base, "--task", task], "--task")
    if case == "inpaint":
        return Case("eval", [*base, "--inpaint"], "--inpaint")
    return Case("eval", ["eval", "/nowhere/model", "--task", "caption"], "/nowhere/model")


@st.composite
def data_cases(draw, out: str) -> Case:
    command = draw(st.sampled_from(sorted(DATA_INTS)))
    flag = draw(st.sampled_from(sorted(DATA_INTS[command])))
    base = ["data", command, *(["dir"] if command == "inspect" else []),
            *(["--out", out] if command != "inspect" else []), *DATA_REQUIRED[command]]
    if command == "digits" and draw(st.booleans()):
        fraction = draw(st.one_of(st.floats(max_value=0), st.floats(min_value=1), st.just("nan")))
        return Case("data", [*base, f"--test-fraction={fraction}"], "--test-fraction")
    return Case("data", [*base, f"{flag}={draw(bad_ints(*DATA_INTS[command][flag]))}"], flag)


@st.composite
def export_cases(draw, empty_run: str, out: str) -> Case:
    case = draw(st.sampled_from(["tag", "missing-tag", "run", "no-checkpoint"]))
    if case == "tag":
        tag = draw(st.sampled_from(["../x", "", "a/b", "/abs", "..", "."]))
        return Case("export", ["export", empty_run, "--out", out, "--tag", tag], "--tag")
    if case == "missing-tag":
        tag = f"step{draw(st.integers(0, 10**8)):08d}"
        return Case("export", ["export", empty_run, "--out", out, "--tag", tag], tag)
    if case == "run":
        run = draw(st.sampled_from(["/nowhere/run", "/", out + "/not-here"]))
        return Case("export", ["export", run, "--out", out], run)
    return Case("export", ["export", empty_run, "--out", out], "no complete checkpoint")


@st.composite
def demo_cases(draw, bundle: str) -> Case:
    if draw(st.integers(0, 5)) == 0:
        return Case("demo", ["demo", "--checkpoint", "/nowhere/model"], "/nowhere/model")
    flag = draw(st.sampled_from(sorted(DEMO_INTS)))
    return Case("demo", ["demo", "--checkpoint", bundle, f"{flag}={draw(bad_ints(*DEMO_INTS[flag]))}"], flag)


# ----- the sandbox ------------------------------------------------------------------------------------------------
class Sandbox:
    """The files a case needs (a config with real tokenizers and data, a tiny bundle, a run without checkpoints) and
    the stubs that stand in for each command's work; `run(case)` classifies the answer."""

    def __init__(self, root: Path, monkeypatch):
        from tiny_bundle import make_tiny_bundle
        from trainer_fixtures import make_setup, write_config

        self.root = root
        setup = make_setup(root / "setup")["root"]
        self.config = str(write_config(setup, root / "runs" / "run", steps=12))
        self.bundle = str(make_tiny_bundle(root / "bundle"))
        self.data = str(setup)
        self.out = str(root / "out")
        empty = root / "empty-run"
        (empty / "checkpoints").mkdir(parents=True)
        (empty / "config.yaml").write_text(Path(self.config).read_text())
        self.empty_run = str(empty)
        self._stub(monkeypatch)

    @staticmethod
    def _stub(monkeypatch) -> None:
        import unimask.demos.app as app
        import unimask.training.data.cli as data_cli
        import unimask.training.evaluation.cli as eval_cli
        import unimask.training.launch as launch
        from unimask.training.evaluation import suite

        def accept(*args, **kwargs):
            raise Accepted()

        monkeypatch.setattr(launch, "run_training", accept)
        monkeypatch.setattr(data_cli, "_dispatch", accept)
        monkeypatch.setattr(app, "build_app", accept)
        for name in ("train_digit_judge", "train_dataset_clip"):
            monkeypatch.setattr(eval_cli, name, accept)
        for name in ("evaluate_captions", "evaluate_digits_t2i", "evaluate_shapes_t2i", "evaluate_vla",
                     "evaluate_clip"):
            monkeypatch.setattr(suite, name, accept)

    def cases(self) -> st.SearchStrategy[Case]:
        return st.one_of(train_cases(self.config), train_cases(self.config), eval_cases(self.bundle, self.data, self.out),
                         data_cases(self.out), export_cases(self.empty_run, self.out), demo_cases(self.bundle))

    def run(self, argv: list[str], mention: str = "") -> Outcome:
        from unimask.cli import main

        err, out = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except Accepted:
            return Outcome("accepted", time.perf_counter() - start, out.getvalue())
        except SystemExit as exit:  # argparse refusing an option's type
            code = exit.code
        except BaseException:  # noqa: BLE001 - anything else escaping the command is what the fuzz looks for
            return Outcome("traceback", time.perf_counter() - start, traceback.format_exc())
        seconds, message = time.perf_counter() - start, err.getvalue()
        if code == 0:
            return Outcome("exit-0", seconds, out.getvalue())
        if code != 2 or "error:" not in message or "Traceback" in message:
            return Outcome("traceback", seconds, f"exit {code}: {message}")
        return Outcome("refused" if plain(mention) in plain(message) else "unclear", seconds, message)


def plain(text: str) -> str:
    """Text compared without case, dashes, underscores and backticks: `--lora-rank` names `init.lora_rank`."""
    return "".join(ch for ch in text.lower() if ch not in "-_`")


def summary(outcomes: list[tuple[Case, Outcome]]) -> dict[str, object]:
    """Counts by outcome and by command, the slowest answer, and the first case of each kind that is not a clean
    refusal."""
    failures: dict[str, dict[str, object]] = {}
    for case, outcome in outcomes:
        if outcome.kind != "refused":
            failures.setdefault(outcome.kind, {"argv": case.argv, "mention": case.mention,
                                               "message": outcome.message[-600:]})
    return {"cases": len(outcomes), **{kind: sum(o.kind == kind for _, o in outcomes)
                                       for kind in ("refused", "unclear", "accepted", "exit-0", "traceback")},
            "by_command": {command: sum(case.command == command for case, _ in outcomes)
                           for command in ("train", "eval", "data", "export", "demo")},
            "slowest_s": round(max((o.seconds for _, o in outcomes), default=0.0), 2), "first_failures": failures}
