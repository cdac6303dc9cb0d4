"""Fuzzing the command line and the config keys with hypothesis: every bad value given to `unimask train` (any
dotted config key or option), `eval`, `data`, `export` or `demo` is refused with exit status 2 and a message that
names it, without a traceback and within seconds; none gets through to the work the command would start
(`tests/cli_fuzz.py` replaces that work with a stub, so a value that slips through is seen at once).

300 cases run by default; `-m slow` runs 1,200 more. `benchmarks/fuzz_cli.py` prints the counts over any number."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from cli_fuzz import Case, Sandbox

LIMIT_S = 5.0  # a refusal comes before any work: a case slower than this started something
COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield Sandbox(tmp_path_factory.mktemp("fuzz-cli"), monkeypatch)


def check_refused(sandbox: Sandbox, case: Case) -> None:
    outcome = sandbox.run(case.argv, case.mention)
    assert outcome.kind == "refused", f"{case.argv}: {outcome.kind}, expected a refusal naming {case.mention!r}:\n" \
                                      f"{outcome.message}"
    assert outcome.seconds < LIMIT_S, f"{case.argv} took {outcome.seconds:.1f} s to refuse"


def refuse_generated(sandbox: Sandbox, examples: int) -> None:
    @settings(max_examples=examples, **COMMON)
    @given(case=sandbox.cases())
    def each(case):
        check_refused(sandbox, case)

    each()


def test_generated_bad_values_are_refused_cleanly(sandbox):
    refuse_generated(sandbox, 300)


@pytest.mark.slow
def test_more_generated_bad_values_are_refused_cleanly(sandbox):
    refuse_generated(sandbox, 1200)


def test_good_values_get_through_to_the_work(sandbox):
    """The other half: the checks refuse only what is bad (each command reaches its stubbed work)."""
    good = [
        ["train", "--config", sandbox.config, "train.steps=5", "optim.lr=3e-4", "model.max_seq_len=96",
         "data.shuffle_buffer=0", "masking.condition_dropout.t2i=0.2", "--stop-after", "2"],
        ["eval", sandbox.bundle, "--task", "vla", "--data", sandbox.data, "--out", sandbox.out, "--execute-steps", "1",
         "--action-steps", "8", "--episodes", "2", "--workers", "1", "--seeds", "0,3"],
        ["eval", sandbox.bundle, "--task", "vla", "--data", sandbox.data, "--out", sandbox.out, "--delay", "1",
         "--inpaint", "--execute-steps", "0", "--workers", "1"],
        ["data", "digits", "--out", sandbox.out, "--image-size", "1024", "--test-fraction", "0.5"],
        ["demo", "--checkpoint", sandbox.bundle, "--port", "65535", "--max-batch", "256"],
    ]
    for argv in good[:2] + good[3:]:
        assert sandbox.run(argv).kind == "accepted", argv
    # A delay of 1 leaves no action of a 2-action chunk to execute: refused, naming the fix.
    assert sandbox.run(good[2], "execute_steps + 2 * delay").kind == "refused"
    assert sandbox.run(["train", "--config", sandbox.config, "--dry-run", "--world-size", "8"]).kind == "exit-0"


def test_a_refusal_prints_one_line_and_debug_shows_the_traceback(sandbox, capsys):
    from unimask.cli import main
    from unimask.config import ConfigError

    assert main(["train", "--config", sandbox.config, "train.checkpoint_every=0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: `train.checkpoint_every` must be an integer >= 1, got 0; a checkpoint is also written " \
                  "at the last step.\n"
    with pytest.raises(ConfigError, match="train.checkpoint_every"):
        main(["--debug", "train", "--config", sandbox.config, "train.checkpoint_every=0"])


# The inputs the issue found accepted, hanging, or refused under a traceback, each with what the refusal must name.
ISSUE_CASES = [
    (["train.steps=-1"], "train.steps"), (["train.steps=0"], "train.steps"), (["--stop-after", "-1"], "--stop-after"),
    (["model.n_layers=0"], "model.n_layers"), (["optim.warmup=-5"], "optim.warmup"),
    (["data.shuffle_buffer=-1"], "data.shuffle_buffer"), (["--dry-run", "--world-size", "-2"], "--world-size"),
    (["train.checkpoint_every=0"], "train.checkpoint_every"), (["train.log_every=0"], "train.log_every"),
    (["model.d_model=0"], "model.d_model"),
]


@pytest.mark.parametrize("extra, mention", ISSUE_CASES, ids=[" ".join(extra) for extra, _ in ISSUE_CASES])
def test_the_train_values_the_issue_found_are_refused(sandbox, extra, mention):
    check_refused(sandbox, Case("train", ["train", "--config", sandbox.config, *extra], mention))


@pytest.mark.parametrize("extra, mention", [
    (["--episodes", "-1"], "--episodes"), (["--limit", "0"], "--limit"), (["--delay", "-3"], "--delay"),
    (["--delay", "2"], "delay"), (["--execute-steps", "-1"], "--execute-steps"),
    (["--execute-steps", "40"], "--execute-steps"), (["--action-steps", "-2"], "--action-steps"),
    (["--action-steps", "50"], "--action-steps"), (["--workers", "-4"], "--workers"),
    (["--workers", "100000"], "--workers")])
def test_bad_rollout_options_are_refused_before_any_rollout(sandbox, extra, mention):
    argv = ["eval", sandbox.bundle, "--task", "vla", "--data", sandbox.data, "--out", sandbox.out,
            "--execute-steps", "1", "--workers", "1", *extra]
    check_refused(sandbox, Case("eval", argv, mention))


def test_a_huge_image_size_is_refused_at_once_and_writes_nothing(sandbox, tmp_path):
    check_refused(sandbox, Case("data", ["data", "digits", "--out", str(tmp_path / "d"), "--image-size", "100000"],
                                "--image-size must be an integer in [8, 1024], got 100000"))
    assert not (tmp_path / "d").exists()
