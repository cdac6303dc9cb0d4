"""Test convenience: the built-in task templates as methods over the generic `SequenceBuilder`."""

from __future__ import annotations

from unimask.registry import get_modality, get_task
from unimask.sequence import SequenceBuilder


class TemplateBuilder:
    def __init__(self, vocab, caption_length: int = 32, image_tokens: int | None = None,
                 action_tokens: int | None = None, state_tokens: int | None = None, max_condition_text: int = 64):
        names = [name for name in vocab.modality_names if name not in ("special", "mask")]
        lengths = {name: n for name, n in (("image", image_tokens), ("action", action_tokens),
                                           ("state", state_tokens)) if n is not None}
        self.vocab = vocab
        self.builder = SequenceBuilder(vocab, {name: get_modality(name) for name in names}, lengths, caption_length,
                                       max_condition_text)

    def t2i(self, prompt, image=None):
        return self.builder.build(get_task("t2i"), [prompt, image])

    def i2t(self, image, caption=None):
        return self.builder.build(get_task("i2t"), [image, caption])

    def vla(self, image, instruction, actions=None, state_codes=None):
        return self.builder.build(get_task("vla"), [image, instruction, state_codes, actions])

    def lm(self, text=None):
        return self.builder.build(get_task("lm"), [text])
