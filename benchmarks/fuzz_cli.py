"""Bad command-line input at scale: N generated bad values and options across `unimask train` (every dotted config
key and option), `eval`, `data`, `export` and `demo`, each run in-process; prints how many were refused cleanly
(exit status 2, a message naming the input, no traceback), refused naming something else, accepted (reached the
command's work), exited 0, or raised a traceback, and the slowest refusal.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_cli.py --cases 1200

The cases and the sandbox are those of tests/test_fuzz_cli.py (tests/cli_fuzz.py); the work each command would
start is replaced by a stub, so nothing trains, renders or serves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cli_fuzz import Sandbox, summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1200, help="generated cases (default 1200)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    args = parser.parse_args()
    outcomes = []
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as monkeypatch:
        sandbox = Sandbox(Path(folder), monkeypatch)

        @seed(args.seed)
        @settings(max_examples=args.cases, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=sandbox.cases())
        def each(case):
            outcomes.append((case, sandbox.run(case.argv, case.mention)))

        each()
    print(json.dumps(summary(outcomes), indent=2))


if __name__ == "__main__":
    main()
