"""Run `unimask` with a fault injected: the process is killed (SIGKILL) after a checkpoint's files are written and
before its completion marker, at the step given first on the command line.

    python tests/kill_during_save.py STEP train --config run.yaml
"""

import os
import sys

import unimask.training.trainer as trainer
from unimask.cli import main


def die_before_marker(step: int):
    write_marker = trainer.write_marker

    def marker(directory, tag, at_step, keep_last):
        if at_step == step:
            os.kill(os.getpid(), 9)
        write_marker(directory, tag, at_step, keep_last)

    return marker


if __name__ == "__main__":
    trainer.write_marker = die_before_marker(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
