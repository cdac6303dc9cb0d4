"""Where a log window's time went, measured without slowing the step down.

    timer = StepTimer(device)
    timer.start()                 # before asking the loader for a batch
    batch = next(batches)
    timer.mark("data")            # the batch is here
    ... forward ...; timer.mark("forward"); ... backward ...; timer.mark("backward"); ... step ...; timer.mark("optimizer")
    split = timer.split(steps)    # at a log step: seconds per step of each phase

On a CPU the work is synchronous, so each phase is the host time between two marks and `other` is what no phase
covers (logging, checkpoints, bookkeeping); the phases and `other` add up to the wall time. On a GPU the step's
work is queued: a mark records a CUDA event instead, and the phases are the device time between events, read only
when the split is asked for (the one synchronisation of a log window). There the phases and `idle` (the device
waiting for the host: for data, for kernel launches, for a synchronisation) add up to the wall time, and `data` is
the host's time waiting for the loader, reported beside them (it explains idle time when the loader is too slow).
"""

from __future__ import annotations

import time

import torch

PHASES = ("forward", "backward", "optimizer")


class StepTimer:
    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.window_start = time.perf_counter()
        self.seconds = {"data": 0.0, **{phase: 0.0 for phase in PHASES}}
        self.events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._host = self.window_start
        self._event: torch.cuda.Event | None = None

    def start(self) -> None:
        self._host = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The end of `phase` ("data", "forward", "backward" or "optimizer"), which began at the previous mark."""
        now = time.perf_counter()
        if phase == "data" or not self.cuda:
            self.seconds[phase] += now - self._host
        self._host = now
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            if phase != "data" and self._event is not None:
                self.events.append((phase, self._event, event))
            self._event = event

    def split(self, steps: int) -> dict[str, float]:
        """Seconds per step of each phase over the window since the last split, then a new window starts."""
        if self.cuda:
            torch.cuda.synchronize()
            for phase, begin, end in self.events:
                self.seconds[phase] += begin.elapsed_time(end) / 1000
        wall = time.perf_counter() - self.window_start
        busy = sum(self.seconds[phase] for phase in PHASES)
        rest = wall - busy if self.cuda else wall - busy - self.seconds["data"]
        split = {f"time/{name}": value / max(steps, 1) for name, value in self.seconds.items()}
        split["time/idle" if self.cuda else "time/other"] = rest / max(steps, 1)
        split["time/step"] = wall / max(steps, 1)
        self.reset()
        return split
