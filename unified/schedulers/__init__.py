"""Unmasking schedulers, one per decoding algorithm (diffusers-style: no model inside), registered by name.

A modality names its default scheduler (`Modality.scheduler`); `make_scheduler(name, vocab, **options)` builds one
with the vocabulary's special ids filled in and refuses options the scheduler does not take.
"""

from __future__ import annotations

import inspect
from typing import Any

from unimask.errors import InputTypeError

from .action import ActionUnmaskingScheduler
from .image import ImageUnmaskingScheduler
from .text import TextUnmaskingScheduler

SCHEDULERS: dict[str, type] = {
    "text": TextUnmaskingScheduler,
    "maskgit": ImageUnmaskingScheduler,
    "confidence": ActionUnmaskingScheduler,
}
_FILLED = {"mask_id", "eos_id", "pad_id"}


def register_scheduler(name: str, cls: type) -> type:
    """Make a scheduler class available to modalities under `name`."""
    if name in SCHEDULERS and SCHEDULERS[name] is not cls:
        raise ValueError(f"a scheduler named {name!r} is already registered ({SCHEDULERS[name].__name__}).")
    SCHEDULERS[name] = cls
    return cls


def scheduler_options(name: str) -> set[str]:
    """The options a caller may set on scheduler `name` (its constructor's, minus the vocabulary's ids)."""
    return set(inspect.signature(_class(name).__init__).parameters) - {"self"} - _FILLED


def _class(name: str) -> type:
    if name not in SCHEDULERS:
        raise KeyError(f"no scheduler {name!r}; registered: {sorted(SCHEDULERS)}.")
    return SCHEDULERS[name]


def make_scheduler(name: str, vocab: Any, **options: Any) -> Any:
    """Scheduler `name` for `vocab` with `options`; an option it does not take raises TypeError naming the valid ones."""
    unknown = sorted(set(options) - scheduler_options(name))
    if unknown:
        raise InputTypeError(f"unknown scheduler option(s) {unknown}; {_class(name).__name__} accepts "
                        f"{sorted(scheduler_options(name))}.")
    cls = _class(name)
    parameters = inspect.signature(cls.__init__).parameters
    filled = {key: getattr(vocab, key) for key in _FILLED if key in parameters}
    return cls(**filled, **options)


__all__ = ["ActionUnmaskingScheduler", "ImageUnmaskingScheduler", "SCHEDULERS", "TextUnmaskingScheduler",
           "make_scheduler", "register_scheduler", "scheduler_options"]
