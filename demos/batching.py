"""Micro-batching of concurrent demo requests: requests of one kind with the same settings share one model call.

A `Batcher` is called from many request threads at once. Each call waits in a bounded queue; one worker thread takes
the oldest request, gathers the others waiting with the same key (for example the same number of decoding steps) up
to `max_batch` or `wait_s` seconds, and runs them as one batch under the model's lock. Every caller gets its own
result, or its own exception: when a batch fails, each of its requests is run again alone, so one request's bad
input never answers another's. A full queue refuses new requests at once with `DemoBusyError` instead of letting
them wait without bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Hashable


class DemoBusyError(RuntimeError):
    """The demo has more requests waiting than it serves; the message asks to try again."""


class Batcher:
    def __init__(self, run: Callable[[Hashable, list[Any]], list[Any]], lock: threading.Lock, max_batch: int = 16,
                 wait_s: float = 0.05, max_pending: int = 64):
        if max_batch < 1 or max_pending < 1:
            raise ValueError(f"`max_batch` and `max_pending` must be >= 1, got {max_batch} and {max_pending}.")
        self.run, self.lock = run, lock
        self.max_batch, self.wait_s, self.max_pending = max_batch, wait_s, max_pending
        self._pending: deque[tuple[Hashable, Any, Future]] = deque()
        self._ready = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def __call__(self, key: Hashable, item: Any) -> Any:
        """The result of `item` (run in a batch of items with the same `key`); raises what running it raised."""
        future: Future = Future()
        with self._ready:
            if len(self._pending) >= self.max_pending:
                raise DemoBusyError(f"The demo is busy ({len(self._pending)} requests waiting); try again in a "
                                    "moment.")
            self._pending.append((key, item, future))
            self._ready.notify()
        return future.result()

    def _take(self) -> tuple[Hashable, list[tuple[Any, Future]]]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            key = self._pending[0][0]
            deadline = time.monotonic() + self.wait_s
            while (sum(k == key for k, _, _ in self._pending) < self.max_batch
                   and (left := deadline - time.monotonic()) > 0):
                self._ready.wait(left)
            batch = [(item, future) for k, item, future in self._pending if k == key][:self.max_batch]
            for _, future in batch:
                self._pending.remove(next(p for p in self._pending if p[2] is future))
            return key, batch

    def _serve(self) -> None:
        while True:
            key, batch = self._take()
            if len(batch) > 1 and self._answer(key, batch):
                continue
            for request in batch:  # one at a time: each caller gets its own answer or its own error
                self._answer(key, [request])

    def _answer(self, key: Hashable, batch: list[tuple[Any, Future]]) -> bool:
        """Run `batch` as one call; True when every caller got a result. A single request gets its exception."""
        try:
            with self.lock:
                results = list(self.run(key, [item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the demo's batch function returned {len(results)} results for {len(batch)} "
                                   "requests.")
        except Exception as err:  # noqa: BLE001 - the callers get the error, the worker keeps serving
            if len(batch) == 1:
                batch[0][1].set_exception(err)
            return False
        for (_, future), result in zip(batch, results):
            future.set_result(result)
        return True
