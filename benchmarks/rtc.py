"""Real-time chunking by inpainting: closed-loop MT10 success and the jump in action where one chunk hands over to
the next, for inference delays of 0, 2 and 4 control steps, with and without inpainting.

With a delay of d steps, the robot keeps executing the old chunk while the new one is computed from the current
frame; the new chunk is executed from index d. Without inpainting its first d actions are decoded freely (and
skipped); with inpainting they are frozen to the d actions actually executed (`pipe.act(..., executed=...)`), so
the rest of the chunk is decoded given what the robot is doing. A chunk must hold execute_steps + 2 * delay actions.

    # a horizon-16 policy (the default recipe writes 8-action chunks):
    unimask data metaworld --out runs/mt10-h16 --horizon 16 --train-episodes 12 --test-episodes 0 --workers 2
    OMP_NUM_THREADS=1 python benchmarks/vla_proxy.py --run runs/quickstart --data runs/mt10-h16 \\
        --set sequence.action_horizon=16 --out runs/proxy/h16 --steps 600
    OMP_NUM_THREADS=1 python benchmarks/rtc.py --checkpoint runs/proxy/h16/model --execute-steps 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tables import markdown_table  # benchmarks/tables.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--delays", default="0,2,4", help="comma-separated inference delays in control steps")
    parser.add_argument("--execute-steps", type=int, default=4, help="new-chunk actions executed before re-planning")
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="", help="json results (default: CHECKPOINT/../rtc.json)")
    args = parser.parse_args()

    from vla_proxy import evaluate

    rows = []
    for delay in (int(d) for d in args.delays.split(",")):
        for inpaint in ((False, True) if delay else (False,)):
            result = evaluate(Path(args.checkpoint), args.episodes, args.workers,
                              execute_steps=args.execute_steps, delay=delay, inpaint=inpaint)
            rows.append({"delay": delay, "inpaint": inpaint, **result})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out or Path(args.checkpoint).parent / "rtc.json")
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nexecute_steps {args.execute_steps}, {rows[0]['episodes']} episodes per row ({args.checkpoint})\n")
    print(markdown_table(["delay (steps)", "inpainting", "success ± s.e.", "jump at chunk switch",
                          "change inside a chunk"],
                         [[r["delay"], "yes" if r["inpaint"] else "no",
                           f"{r['success']:.2f} ± {r['standard_error']:.2f}", f"{r['boundary_jump']:.3f}",
                           f"{r['action_change']:.3f}"] for r in rows]))


if __name__ == "__main__":
    main()
