"""The one family of errors unimask raises for bad input (a leaf module: every layer may import it).

    try:
        pipe.text_to_image(prompts, steps=user_steps)
    except unimask.InputError as err:   # a value, a type, a file or data that unimask refuses
        show(err)                       # the message names the problem and the fix

`InputError` is a `ValueError`; `InputTypeError` (a wrong type) is both an `InputError` and a `TypeError`. Every
error class of unimask for bad input derives from `InputError`: `VocabError`, `SequenceError`, `ConfigError`,
`ImageInputError`, `ActionTokenizerError`, `DataError`, `DemoInputError`.
"""

from __future__ import annotations


class InputError(ValueError):
    """A value, file or piece of data unimask cannot use; the message says which and how to fix it."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type."""
