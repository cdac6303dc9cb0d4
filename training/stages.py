"""Resumable stages for long jobs such as `unimask quickstart`.

A stage is done when its marker file `<out>/.stages/<name>.json` exists; the marker is written (atomically) only after
the stage's work returned, so an interrupted stage runs again from the start and a finished one is skipped. The
marker records when and how long it ran and what the stage returned, which the report reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from unimask.atomic import atomic_write_text


class StageRunner:
    def __init__(self, out: str | Path, log: Callable[[str], None] = print):
        self.out = Path(out)
        self.markers = self.out / ".stages"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.log = log

    def marker(self, name: str) -> Path:
        return self.markers / f"{name}.json"

    def result(self, name: str) -> dict[str, Any] | None:
        path = self.marker(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def run(self, name: str, work: Callable[[], Any], outputs: str | Path | None = None) -> Any:
        """Run `work()` unless stage `name` finished before; returns what it returned (or what it returned then)."""
        done = self.result(name)
        if done is not None:
            self.log(f"[{name}] done already ({done['seconds']:.0f} s) -> {done.get('outputs')}")
            return done["result"]
        self.log(f"[{name}] running ...")
        start = time.time()
        result = work()
        seconds = time.time() - start
        record = {"name": name, "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "outputs": str(outputs) if outputs is not None else None, "result": result}
        atomic_write_text(self.marker(name), json.dumps(record, indent=2, default=str))
        self.log(f"[{name}] finished in {seconds:.0f} s -> {outputs}")
        return result

    def timings(self) -> dict[str, float]:
        return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(self.markers.glob("*.json"))}
