"""`UnifiedPipeline`: captions, images and robot actions from one exported checkpoint folder.

    pipe = UnifiedPipeline.from_pretrained("runs/quickstart/model")
    pipe.caption(images)                                   # -> list[str]
    pipe.text_to_image(["the digit 7"], guidance_scale=3)  # -> list[PIL.Image]
    pipe.act(frames, ["open the drawer"], state=states)    # -> np.ndarray [B, H, D] in real units

Every method is batched, takes `steps`, `guidance_scale` (`uncond + w * (cond - uncond)`; 1 = off, LLaDA's
`cfg = w - 1`), `seed` or `generator`, the scheduler options of its modality, `use_cache` (the exact prefix cache),
and `return_trajectory=True` to get the target after every step (and, for images, the decoded image at every step).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .bundle import Bundle, load_bundle
from .sampler import GenerationOutput, generate
from .schedulers.action import ActionUnmaskingScheduler
from .schedulers.image import ImageUnmaskingScheduler
from .schedulers.text import TextUnmaskingScheduler
from .sequence import SequenceError, collate


@dataclass
class PipelineOutput:
    outputs: Any  # list[str] | list[PIL.Image] | np.ndarray, as the method documents
    forward_passes: int  # model calls used
    trajectory: list[torch.Tensor] = field(default_factory=list)  # (B, N) target ids after every step
    trajectory_images: list[list[Any]] = field(default_factory=list)  # t2i only: decoded images after every step


def _scheduler_options(cls: type, options: dict[str, Any], method: str) -> dict[str, Any]:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "mask_id", "eos_id", "pad_id"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{method}() got unknown scheduler option(s) {unknown}; {cls.__name__} accepts {sorted(allowed)}.")
    return options


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
    return steps


def _check_list(name: str, values: Any) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise TypeError(f"`{name}` must be a list, got {type(values).__name__}.")
    if len(values) == 0:
        raise ValueError(f"`{name}` is empty; give at least one item.")
    return list(values)


class UnifiedPipeline:
    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu"):
        bundle.validate()
        self.bundle = bundle
        self.vocab = bundle.vocab
        self.builder = bundle.builder()
        self.to(device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "UnifiedPipeline":
        return cls(load_bundle(directory), device=device)

    def to(self, device: str | torch.device) -> "UnifiedPipeline":
        self.device = torch.device(device)
        self.bundle.model.to(self.device)
        if self.bundle.image_tokenizer is not None:
            self.bundle.image_tokenizer.to(self.device)
        return self

    @property
    def model(self):
        return self.bundle.model

    @property
    def uses_state(self) -> bool:
        return self.bundle.state_tokenizer is not None

    # ----- helpers ------------------------------------------------------------------------------------------------
    def _generator(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None:
            return generator
        return torch.Generator().manual_seed(seed) if seed is not None else None

    def _text_ids(self, text: str, name: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"every entry of `{name}` must be a non-empty string, got {text!r}.")
        return self.bundle.text_tokenizer.encode(text, add_special_tokens=False)

    def _image_codes(self, images: Sequence[Any]) -> torch.Tensor:
        if self.bundle.image_tokenizer is None:
            raise ValueError("this checkpoint has no image tokenizer, so it cannot read or write images.")
        return self.bundle.image_tokenizer.encode(list(images)).flatten(1).cpu()

    def _run(self, sequences, scheduler, steps, guidance_scale, use_cache, generator, return_trajectory,
             **timestep_kwargs) -> GenerationOutput:
        batch = collate(sequences, pad_id=self.vocab.pad_id, padding_side="left")
        return generate(self.model, batch, self.vocab, scheduler, steps, guidance_scale=guidance_scale,
                        use_cache=use_cache, generator=generator, return_trajectory=return_trajectory,
                        **timestep_kwargs)

    def _text_scheduler(self, steps: int, options: dict[str, Any], method: str) -> tuple[TextUnmaskingScheduler, int]:
        options = _scheduler_options(TextUnmaskingScheduler, options, method)
        options.setdefault("block_length", self.builder.caption_length)
        scheduler = TextUnmaskingScheduler(self.vocab.mask_id, self.vocab.eos_id, self.vocab.pad_id, **options)
        blocks = -(-self.builder.caption_length // scheduler.block_length)
        steps = max(blocks, steps - steps % blocks)  # the text scheduler needs a multiple of the block count
        return scheduler, steps

    def _decode_text(self, ids: torch.Tensor) -> list[str]:
        from unimask.tokenizers.text import decode_text

        return [decode_text(self.bundle.text_tokenizer, row.tolist()) for row in ids]

    # ----- tasks --------------------------------------------------------------------------------------------------
    def caption(self, images: Sequence[Any], steps: int | None = None, guidance_scale: float = 1.0,
                seed: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                return_trajectory: bool = False, **scheduler_options: Any):
        """Captions for images (PIL, uint8 arrays or float tensors). Returns list[str], or a PipelineOutput with
        `return_trajectory=True`. Default steps: one per caption token."""
        images = _check_list("images", images)
        steps = _check_steps(steps if steps is not None else self.builder.caption_length)
        scheduler, steps = self._text_scheduler(steps, scheduler_options, "caption")
        codes = self._image_codes(images)
        out = self._run([self.builder.i2t(c) for c in codes], scheduler, steps, guidance_scale, use_cache,
                        self._generator(seed, generator), return_trajectory)
        texts = self._decode_text(out.tokens)
        return PipelineOutput(texts, out.forward_passes, out.trajectory) if return_trajectory else texts

    def generate_text(self, prompts: Sequence[str], steps: int | None = None, seed: int | None = None,
                      generator: torch.Generator | None = None, return_trajectory: bool = False,
                      **scheduler_options: Any):
        """Continue each prompt inside the `lm` template (the prompt is the known start of the text target)."""
        prompts = _check_list("prompts", prompts)
        steps = _check_steps(steps if steps is not None else self.builder.caption_length)
        sequences = []
        for prompt in prompts:
            ids = self._text_ids(prompt, "prompts")
            if len(ids) >= self.builder.caption_length:
                raise ValueError(f"a prompt has {len(ids)} tokens; at most {self.builder.caption_length - 1} fit.")
            seq = self.builder.lm(None)
            start = int((seq.segment_ids == 2).nonzero()[0]) + 1
            seq.input_ids[start:start + len(ids)] = torch.tensor(ids)
            sequences.append(seq)
        scheduler, steps = self._text_scheduler(steps, scheduler_options, "generate_text")
        out = self._run(sequences, scheduler, steps, 1.0, True, self._generator(seed, generator), return_trajectory)
        texts = self._decode_text(out.tokens)
        return PipelineOutput(texts, out.forward_passes, out.trajectory) if return_trajectory else texts

    def text_to_image(self, prompts: Sequence[str], steps: int = 12, guidance_scale: float = 3.0,
                      seed: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                      return_trajectory: bool = False, **scheduler_options: Any):
        """Images for prompts. Returns list[PIL.Image], or a PipelineOutput with `return_trajectory=True` whose
        `trajectory_images` hold the decoded image after every step (masked codes drawn as code 0)."""
        prompts = _check_list("prompts", prompts)
        steps = _check_steps(steps)
        if self.bundle.image_tokenizer is None:
            raise ValueError("this checkpoint has no image tokenizer, so it cannot write images.")
        options = _scheduler_options(ImageUnmaskingScheduler, scheduler_options, "text_to_image")
        scheduler = ImageUnmaskingScheduler(self.vocab.mask_id, **options)
        sequences = []
        for prompt in prompts:
            try:
                sequences.append(self.builder.t2i(self._text_ids(prompt, "prompts")))
            except SequenceError as err:
                raise ValueError(f"prompt {prompt!r}: {err}") from None
        out = self._run(sequences, scheduler, steps, guidance_scale, use_cache, self._generator(seed, generator),
                        return_trajectory)
        images = self._codes_to_images(out.tokens)
        if not return_trajectory:
            return images
        frames = [self._codes_to_images(step) for step in out.trajectory]
        return PipelineOutput(images, out.forward_passes, out.trajectory, frames)

    def _codes_to_images(self, ids: torch.Tensor) -> list:
        ids = torch.where(ids == self.vocab.mask_id, self.vocab.image_start, ids)
        return self.bundle.image_tokenizer.decode_to_pil(self.vocab.id_to_image(ids))

    def act(self, images: Sequence[Any], instructions: Sequence[str], state: Any = None, steps: int = 2,
            guidance_scale: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None,
            use_cache: bool = True, return_trajectory: bool = False, **scheduler_options: Any):
        """Action chunks [B, H, D] in real units for observations (frames) and instructions (+ state [B, S] when
        the checkpoint was trained with state tokens)."""
        images = _check_list("images", images)
        instructions = _check_list("instructions", instructions)
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} images but {len(instructions)} instructions; give one each.")
        if self.bundle.action_tokenizer is None:
            raise ValueError("this checkpoint has no action tokenizer, so it cannot write actions.")
        steps = _check_steps(steps)
        state_codes = self._state_codes(state, len(images))
        options = _scheduler_options(ActionUnmaskingScheduler, scheduler_options, "act")
        scheduler = ActionUnmaskingScheduler(self.vocab.mask_id, **options)
        codes = self._image_codes(images)
        sequences = []
        for i, (image_codes, instruction) in enumerate(zip(codes, instructions)):
            try:
                sequences.append(self.builder.vla(image_codes, self._text_ids(instruction, "instructions"), None,
                                                  state_codes=None if state_codes is None else state_codes[i]))
            except SequenceError as err:
                raise ValueError(f"instruction {instruction!r}: {err}") from None
        out = self._run(sequences, scheduler, steps, guidance_scale, use_cache, self._generator(seed, generator),
                        return_trajectory)
        actions = self._decode_actions(out.tokens)
        return PipelineOutput(actions, out.forward_passes, out.trajectory) if return_trajectory else actions

    def _state_codes(self, state: Any, batch: int) -> np.ndarray | None:
        if self.bundle.state_tokenizer is None:
            if state is not None:
                raise ValueError("this checkpoint was trained without state tokens; call act() without `state`.")
            return None
        if state is None:
            raise ValueError("this checkpoint was trained with state tokens; pass `state` [B, S].")
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (batch, self.bundle.settings.state_dim):
            raise ValueError(f"`state` must have shape ({batch}, {self.bundle.settings.state_dim}), got {state.shape}.")
        return self.bundle.state_tokenizer.encode(state).reshape(batch, -1)

    def _decode_actions(self, ids: torch.Tensor) -> np.ndarray:
        settings = self.bundle.settings
        codes = self.vocab.id_to_action(ids).cpu().numpy()
        tokenizer = self.bundle.action_tokenizer
        if hasattr(tokenizer, "pad_code"):  # FAST: variable-length codes padded to a fixed length
            return np.asarray(tokenizer.decode(codes), dtype=np.float32)
        chunk = codes.reshape(len(codes), settings.action_horizon, settings.action_dim)
        return np.asarray(tokenizer.decode(chunk), dtype=np.float32)

    def infill(self, task: str, condition: dict[str, Any], target: torch.Tensor, steps: int = 8,
               guidance_scale: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None,
               return_trajectory: bool = False, **scheduler_options: Any):
        """Complete a partially given target: `target` (B, N) holds tokenizer codes (image codes, action codes or
        text ids) where known and -1 where the model must write them.

        `condition` holds the task's inputs: t2i {"prompts"}, i2t {"images"}, vla {"images", "instructions",
        optional "state"}. Returns the completed target codes (B, N) (and the trajectory if requested).
        """
        target = torch.as_tensor(target, dtype=torch.long)
        if target.dim() != 2:
            raise ValueError(f"`target` must be (B, N) with -1 where unknown, got shape {tuple(target.shape)}.")
        known = target >= 0
        if task == "t2i":
            prompts = _check_list("condition['prompts']", condition.get("prompts"))
            sequences = [self.builder.t2i(self._text_ids(p, "prompts")) for p in prompts]
            to_id, from_id = self.vocab.image_to_id, self.vocab.id_to_image
            options = _scheduler_options(ImageUnmaskingScheduler, scheduler_options, "infill")
            scheduler = ImageUnmaskingScheduler(self.vocab.mask_id, **options)
        elif task == "vla":
            images = _check_list("condition['images']", condition.get("images"))
            instructions = _check_list("condition['instructions']", condition.get("instructions"))
            state_codes = self._state_codes(condition.get("state"), len(images))
            sequences = [self.builder.vla(c, self._text_ids(t, "instructions"), None,
                                          state_codes=None if state_codes is None else state_codes[i])
                         for i, (c, t) in enumerate(zip(self._image_codes(images), instructions))]
            to_id, from_id = self.vocab.action_to_id, self.vocab.id_to_action
            options = _scheduler_options(ActionUnmaskingScheduler, scheduler_options, "infill")
            scheduler = ActionUnmaskingScheduler(self.vocab.mask_id, **options)
        elif task == "i2t":
            images = _check_list("condition['images']", condition.get("images"))
            sequences = [self.builder.i2t(c) for c in self._image_codes(images)]
            to_id, from_id = self.vocab.text_to_id, (lambda ids: ids)
            scheduler, steps = self._text_scheduler(steps, scheduler_options, "infill")
        else:
            raise ValueError(f"`task` must be 't2i', 'vla' or 'i2t', got {task!r}.")
        for seq, row, row_known in zip(sequences, target, known):
            payload = (seq.segment_ids == 2) & seq.content_mask
            if int(payload.sum()) != len(row):
                raise ValueError(f"`target` rows must have {int(payload.sum())} entries for {task}, got {len(row)}.")
            values = seq.input_ids[payload]
            values[row_known] = to_id(row[row_known])
            seq.input_ids[payload] = values
        if len(sequences) != len(target):
            raise ValueError(f"`target` has {len(target)} rows but the condition has {len(sequences)}.")
        extra = {"given": known} if task == "vla" else {}
        out = self._run(sequences, scheduler, _check_steps(steps), guidance_scale, True,
                        self._generator(seed, generator), return_trajectory, **extra)
        completed = from_id(out.tokens.cpu())
        return PipelineOutput(completed, out.forward_passes, out.trajectory) if return_trajectory else completed
