"""The one family of errors unimask raises for bad input (a leaf module: every layer may import it).

    try:
        pipe.text_to_image(prompts, steps=user_steps)
    except unimask.InputError as err:   # a value, a type, a file or data that unimask refuses
        show(err)                       # the message names the problem and the fix

`InputError` is a `ValueError`; `InputTypeError` (a wrong type) is both an `InputError` and a `TypeError`, and
`MissingFileError` (a file or folder that is not there) both an `InputError` and a `FileNotFoundError`. Every error
class of unimask for bad input derives from `InputError`: `ConfigError`, `VocabError`, `SequenceError`,
`ImageInputError`, `ActionTokenizerError`, `DataError`, `DemoInputError`, `CheckpointError`. The `unimask` command
prints them as `error: <message>` without a traceback and exits with status 2 (`unimask --debug ...` shows it).

`check_number` is the one range check every layer uses (config fields, command-line options, call arguments).
"""

from __future__ import annotations

import math
import numbers
from typing import Any


class InputError(ValueError):
    """A value, file or piece of data unimask cannot use; the message says which and how to fix it. `key` names the
    setting at fault when there is one (a config field such as `steps`, a command-line option such as `--limit`)."""

    def __init__(self, *args: Any, key: str | None = None):
        super().__init__(*args)
        self.key = key


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder unimask was pointed at does not exist (or lacks a part it needs)."""


class ConfigError(InputError):
    """A configuration key or value, or a command-line option, is wrong; the message names its dotted path (or the
    option) and the allowed values."""


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else repr(bound)


def describe_range(low: float, high: float, open_low: bool = False, open_high: bool = False) -> str:
    """`>= 1`, `> 0`, `<= 8` or `in [0, 1)`: how a message states an allowed range."""
    if high == math.inf:
        return f"{'>' if open_low else '>='} {_shown(low)}"
    if low == -math.inf:
        return f"{'<' if open_high else '<='} {_shown(high)}"
    return f"in {'(' if open_low else '['}{_shown(low)}, {_shown(high)}{')' if open_high else ']'}"


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False,
                 open_high: bool = False, integer: bool = False, fix: str = "",
                 error: type[InputError] = InputError) -> Any:
    """`value` (an int when `integer`, else a float) when it is a finite number in the range from `low` to `high`
    (ends open when asked); otherwise raise `error` (`InputTypeError` for a wrong type) whose message names `name`,
    the value, the allowed range and `fix`, what to do instead:

        `train.steps` must be an integer >= 1, got 0; it counts optimizer steps, e.g. train.steps=1000.
    """
    kind = "an integer" if integer else "a finite number"
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise InputTypeError(f"`{name}` must be {'an integer' if integer else 'a number'}, got {type(value).__name__} "
                             f"{value!r}{tail}.", key=name)
    inside = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not inside or not (integer or math.isfinite(value)):
        raise error(f"`{name}` must be {kind} {describe_range(low, high, open_low, open_high)}, got {value!r}{tail}.",
                    key=name)
    return int(value) if integer else float(value)


def check_integer_fields(config: Any, bounds: tuple[tuple[str, float, float, str], ...],
                         error: type[InputError] = ConfigError) -> None:
    """Check the fields of a config dataclass from a table of (field, low, high, fix): each must be an integer in
    [low, high]; a field out of range raises `error` naming it."""
    for name, low, high, fix in bounds:
        check_number(name, getattr(config, name), low, high, integer=True, fix=fix, error=error)


def check_choice(name: str, value: Any, choices: tuple[Any, ...], *, fix: str = "",
                 error: type[InputError] = InputError) -> Any:
    """`value` when it is one of `choices`; otherwise raise `error` naming `name`, the value and the choices."""
    if value not in choices:
        listed = ", ".join(map(repr, choices))
        raise error(f"`{name}` must be one of {listed}, got {value!r}{'; ' + fix if fix else ''}.", key=name)
    return value
