"""The registered modalities and task templates: the one place that lists them.

Built-in modalities (text, image, action, state, pixels) are defined beside their tokenizers in `unimask.tokenizers` and
registered here the first time the registry is asked; a new modality is one subclass of `unimask.modality.Modality`
and one `register_modality(...)` call, a new task one `register_task(TaskTemplate(...))`. The vocabulary, the
masking, the loader, pre-tokenizing, the bundle and the pipeline all ask this registry.
"""

from __future__ import annotations

from .modality import Modality, Segment, TaskTemplate

_MODALITIES: dict[str, Modality] = {}
_TASKS: dict[str, TaskTemplate] = {
    template.name: template for template in (
        TaskTemplate("t2i", (Segment("prompt", "text"),), Segment("image", "image")),
        TaskTemplate("i2t", (Segment("image", "image"),), Segment("caption", "text")),
        TaskTemplate("vla", (Segment("image", "image"), Segment("instruction", "text"),
                             Segment("state", "state", optional=True)), Segment("action", "action")),
        TaskTemplate("lm", (), Segment("text", "text")),
    )
}


def _builtin_modalities() -> None:
    # Imported on first use: the tokenizer modules pull in transformers and diffusers, which `import unimask`
    # should not pay for.
    if _MODALITIES:
        return
    from unimask.tokenizers.action.modalities import ActionModality, StateModality
    from unimask.tokenizers.image import FutureFrameModality, ImageModality
    from unimask.tokenizers.pixels import PixelModality
    from unimask.tokenizers.text import TextModality

    for modality in (TextModality(), ImageModality(), ActionModality(), StateModality(), PixelModality(),
                     FutureFrameModality()):
        _MODALITIES[modality.name] = modality


def register_modality(modality: Modality, replace: bool = False) -> Modality:
    """Make `modality` known to every part of unimask under `modality.name`."""
    _builtin_modalities()
    if not isinstance(modality, Modality) or not modality.name:
        raise TypeError(f"register a named instance of a unimask.modality.Modality subclass, got {modality!r}.")
    if modality.name in _MODALITIES and not replace:
        raise ValueError(f"a modality named {modality.name!r} is already registered; pass replace=True to swap it.")
    if modality.name in ("special", "mask"):
        raise ValueError(f"{modality.name!r} names a range of the vocabulary; choose another modality name.")
    _MODALITIES[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    _builtin_modalities()
    if name not in _MODALITIES:
        raise KeyError(f"no modality {name!r} is registered; registered: {sorted(_MODALITIES)}. Register it with "
                       "unimask.registry.register_modality.")
    return _MODALITIES[name]


def vocab_modality(name: str) -> str:
    """The modality whose ids and tokenizer a payload of `name` uses: itself, or the one it shares."""
    return get_modality(name).shares or name


def modalities() -> dict[str, Modality]:
    """Every registered modality by name, in registration order."""
    _builtin_modalities()
    return dict(_MODALITIES)


def register_task(template: TaskTemplate, replace: bool = False) -> TaskTemplate:
    """Make a task template usable by the loader (`task:` of a data stream) and the pipeline (`generate`)."""
    if template.name in _TASKS and not replace:
        raise ValueError(f"a task named {template.name!r} is already registered; pass replace=True to swap it.")
    for segment in template.segments:
        get_modality(segment.modality)
    if any(segment.optional for segment in template.targets):
        raise ValueError(f"task {template.name!r}: a target cannot be optional.")
    _TASKS[template.name] = template
    return template


def get_task(name: str) -> TaskTemplate:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(_TASKS)}.")
    return _TASKS[name]


def tasks() -> dict[str, TaskTemplate]:
    return dict(_TASKS)


def task_index(name: str) -> int:
    """The task's position in registration order (its row in per-task tables such as the masking settings)."""
    get_task(name)
    return list(_TASKS).index(name)
