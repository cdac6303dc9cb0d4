"""`UnifiedPipeline`: captions, images, robot actions (and any registered task) from one exported checkpoint folder.

    pipe = UnifiedPipeline.from_pretrained("runs/quickstart/model")
    pipe.caption(images)                                   # -> list[str]
    pipe.text_to_image(["the digit 7"], guidance_scale=3)  # -> list[PIL.Image]
    pipe.act(frames, ["open the drawer"], state=states)    # -> np.ndarray [B, H, D] in real units
    pipe.generate("t2i", {"prompt": ["the digit 7"]})      # any registered task, by its template's field names

Every method is batched, takes `steps`, `guidance_scale` (`uncond + w * (cond - uncond)`; 1 = off, LLaDA's
`cfg = w - 1`), `seed` or `generator`, the options of the target modality's scheduler, `use_cache` (the exact prefix
cache), and `return_trajectory=True` to get the target after every step (and, for images, the decoded image at
every step).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .bundle import Bundle, load_bundle
from .errors import InputError, InputTypeError, check_choice, check_number
from .registry import get_modality, tasks, vocab_modality
from .sampler import generate
from .schedulers import make_scheduler
from .sequence import TARGET, collate


@dataclass
class PipelineOutput:
    outputs: Any  # list[str] | list[PIL.Image] | np.ndarray, as the method documents
    forward_passes: int  # model calls used
    trajectory: list[torch.Tensor] = field(default_factory=list)  # (B, N) target ids after every step
    trajectory_images: list[list[Any]] = field(default_factory=list)  # t2i only: decoded images after every step
    codes: torch.Tensor | None = None  # (B, N) the target's codes (vocabulary ids minus the modality's first id)
    extras: dict[str, Any] = field(default_factory=dict)  # decoded extra targets by field (e.g. "future": images)
    extra_codes: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, N) their codes by field


MAX_GUIDANCE = 100.0  # far past any useful guidance; a larger scale only overflows the logits
MAX_SEED = 2**63 - 1


def _check_steps(steps: Any, limit: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise InputTypeError(f"`steps` must be an integer, got {type(steps).__name__} {steps!r}.")
    if not 1 <= steps <= limit:
        raise InputError(f"`steps` must be an integer >= 1 and at most {limit} (the target's tokens), got {steps!r}.")
    return steps


def _float_array(name: str, value: Any, shape: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"`{name}` must be an array of numbers {shape}, got {type(value).__name__} ({err}).") \
            from None
    if not np.isfinite(array).all():
        raise InputError(f"`{name}` holds NaN or infinite values; give finite numbers.")
    return array


def _check_list(name: str, values: Any) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray, torch.Tensor)):
        raise InputTypeError(f"`{name}` must be a list, got {type(values).__name__}.")
    if len(values) == 0:
        raise InputError(f"`{name}` is empty; give at least one item.")
    return list(values)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputTypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def _generator(seed: Any, generator: Any, rows: int) -> torch.Generator | list[torch.Generator] | None:
    """The sampling generator: `generator`, or one made from `seed`; a list of seeds (one per input) gives one
    generator per row, so each input's output depends on its own seed only, alone or in a batch."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise InputTypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}.")
        return generator
    if seed is None:
        return None
    if isinstance(seed, (list, tuple)):
        if len(seed) != rows:
            raise InputError(f"`seed` lists {len(seed)} seeds for {rows} inputs; give one seed, or one per input.")
        return [_seeded(s) for s in seed]
    return _seeded(seed)


def _seeded(seed: Any) -> torch.Generator:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputTypeError(f"`seed` must be an integer (or a list of one integer per input), got "
                             f"{type(seed).__name__} {seed!r}.")
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"`seed` must be in [0, 2**63 - 1], got {seed}.")
    return torch.Generator().manual_seed(int(seed))


class UnifiedPipeline:
    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu"):
        if not isinstance(bundle, Bundle):
            raise InputTypeError(f"`bundle` must be a unimask Bundle, got {type(bundle).__name__}; load a folder with "
                                 "UnifiedPipeline.from_pretrained(dir).")
        bundle.validate()
        self.bundle = bundle
        self.processor = bundle.processor
        self.vocab = bundle.vocab
        self.to(device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "UnifiedPipeline":
        return cls(load_bundle(directory), device=device)

    def to(self, device: str | torch.device) -> "UnifiedPipeline":
        self.device = torch.device(device)
        self.bundle.model.to(self.device)
        for tokenizer in self.processor.tokenizers.values():
            if hasattr(tokenizer, "to"):
                tokenizer.to(self.device)
        return self

    @property
    def model(self):
        return self.bundle.model

    def has(self, modality: str) -> bool:
        """Whether the checkpoint reads or writes `modality` (e.g. "state": it was trained with state tokens)."""
        return self.vocab.has(modality)

    @property
    def uses_state(self) -> bool:
        return self.has("state")

    @property
    def image_size(self) -> int | None:
        """The side in pixels at which the checkpoint reads images (None when it reads none)."""
        sides = [getattr(tokenizer, "resolution", None) for tokenizer in self.processor.tokenizers.values()]
        return next((int(side) for side in sides if side), None)

    # ----- the generic loop ---------------------------------------------------------------------------------------
    def generate(self, task: str, inputs: dict[str, Any], steps: int | None = None, guidance_scale: float = 1.0,
                 seed: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                 return_trajectory: bool = False, known: Any = None, extra_steps: dict[str, int] | None = None,
                 estimate: str = "mode", **scheduler_options: Any):
        """Write the target of `task` for a batch of condition inputs, given by the template's field names (e.g.
        vla: {"image": [...], "instruction": [...], "state": [...]}). `known` (B, N) holds target codes that are
        given (-1 where the model must write them). A template with extra targets (`sequence.targets`, e.g. the
        foresight frame of vla) writes those named in `extra_steps` ({field: steps}) first, with their modality's
        scheduler, and leaves the others [MASK]; with `return_trajectory=True` their outputs are in `extras`.
        `estimate="mean"` (ordered codes, e.g. action bins) outputs the expected value of each position's predicted
        distribution instead of its most likely code.
        Returns the decoded outputs, or a PipelineOutput with `return_trajectory=True`. Default steps: one per target
        token."""
        if not isinstance(task, str) or task not in tasks():
            raise InputError(f"unknown task {task!r}; the registered tasks are {sorted(tasks())} (a new one is "
                             "registered with unimask.registry.register_task).")
        guidance_scale = check_number("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
        check_choice("estimate", estimate, ("mode", "mean"))
        _check_flag("use_cache", use_cache)
        _check_flag("return_trajectory", return_trajectory)
        template = self.processor.template(task)
        rows = self._condition_rows(template, inputs)
        if not template.condition:
            if known is None:
                raise InputError(f"task {template.name!r} has no condition: give the target's `known` codes.")
            rows = [[] for _ in range(len(known))]
        generator = _generator(seed, generator, len(rows))
        sequences = self.processor.sequences(task, [[*row, *(None for _ in template.targets)] for row in rows])
        for index, result in enumerate(sequences):
            if isinstance(result, InputError):
                raise type(result)(f"input {index}: {result}") from result
            if isinstance(result, Exception):
                raise InputError(f"input {index} could not be read ({type(result).__name__}: {result}).") from result
        longest = max((len(sequence) for sequence in sequences), default=0)
        if longest > self.model.config.max_seq_len:
            raise InputError(f"the {task} sequences are {longest} tokens, more than the model's max_seq_len of "
                             f"{self.model.config.max_seq_len}; the bundle's sequence settings do not fit its model.")
        target = template.target
        spans = self._target_spans(template)
        length = self.processor.length(target.modality)
        steps = _check_steps(length if steps is None else steps, length)
        scheduler = self._scheduler(target.modality, scheduler_options)
        if hasattr(scheduler, "round_steps"):
            steps = scheduler.round_steps(steps, length)
        extra: dict[str, Any] = {}
        if known is not None:
            given = self._apply_known(sequences, known, target.modality, spans[target.field])
            if "given" in inspect.signature(scheduler.set_timesteps).parameters:
                extra["given"] = given  # the scheduler must never re-mask what the caller gave
        batch = collate(sequences, pad_id=self.vocab.pad_id, padding_side="left")
        extras, extra_codes, passes = {}, {}, 0
        # Extra targets asked for are written first, in template order (a foresight frame before the actions that
        # attend to it); the others stay [MASK] while the target is written.
        for segment in template.extra_targets:
            count = self._extra_steps(extra_steps, segment, template)
            if count:
                out = generate(self.model, batch, self.vocab, self._scheduler(segment.modality, {}), count,
                               guidance_scale=guidance_scale, use_cache=use_cache, generator=generator,
                               write=spans[segment.field])
                batch = replace(batch, input_ids=out.input_ids.cpu())
                extras[segment.field], passes = self.decode(segment.modality, out.tokens), passes + out.forward_passes
                extra_codes[segment.field] = out.tokens.cpu() - self.vocab.range_of(vocab_modality(segment.modality))[0]
        out = generate(self.model, batch, self.vocab, scheduler, steps, guidance_scale=guidance_scale,
                       use_cache=use_cache, generator=generator, return_trajectory=return_trajectory,
                       write=spans[target.field] if template.extra_targets else None, **extra)
        outputs = self._expected(target.modality, out) if estimate == "mean" else self.decode(target.modality,
                                                                                            out.tokens)
        if not return_trajectory:
            return outputs
        codes = out.tokens.cpu() - self.vocab.range_of(vocab_modality(target.modality))[0]
        return PipelineOutput(outputs, passes + out.forward_passes, out.trajectory, codes=codes, extras=extras,
                              extra_codes=extra_codes)

    def _expected(self, modality: str, out: Any) -> Any:
        """Outputs from the mean of each written position's predicted distribution over its modality's codes (a
        position the caller gave counts as certain of its code)."""
        name = vocab_modality(modality)
        decode_mean = getattr(get_modality(name), "decode_mean", None)
        if decode_mean is None:
            raise InputError(f"estimate='mean' needs a target of ordered codes; {name} codes are not. Use 'mode'.")
        start, stop = self.vocab.range_of(name)
        logits = out.logits[..., start:stop]
        given = F.one_hot((out.tokens - start).clamp(0, stop - start - 1), stop - start).to(logits)
        probabilities = torch.where(torch.isfinite(logits).any(-1, keepdim=True), logits.softmax(-1), given)
        return decode_mean(self.processor.tokenizers[name], probabilities.cpu().numpy(), self.processor.settings)

    def _scheduler(self, modality: str, options: dict[str, Any]) -> Any:
        """The decoding scheduler of a target of `modality`, with the bundle's decoding defaults under `options`."""
        name = vocab_modality(modality)
        return make_scheduler(get_modality(name).scheduler, self.vocab,
                              **{**self.bundle.decoding.get(name, {}), **options})

    def _target_spans(self, template: Any) -> dict[str, torch.Tensor]:
        """(N,) bool over the target payload for each target segment: where its codes are (segments in order)."""
        lengths = [self.processor.length(segment.modality) for segment in template.targets]
        bounds = np.cumsum([0, *lengths])
        return {segment.field: (torch.arange(bounds[-1]) >= bounds[i]) & (torch.arange(bounds[-1]) < bounds[i + 1])
                for i, segment in enumerate(template.targets)}

    def _extra_steps(self, extra_steps: Any, segment: Any, template: Any) -> int:
        if extra_steps is None:
            return 0
        if not isinstance(extra_steps, dict) or set(extra_steps) - {s.field for s in template.extra_targets}:
            raise InputError(f"`extra_steps` maps extra target fields of {template.name} "
                             f"({[s.field for s in template.extra_targets] or 'it has none'}) to decoding steps, got "
                             f"{extra_steps!r}.")
        count = extra_steps.get(segment.field, 0)
        return _check_steps(count, self.processor.length(segment.modality)) if count else 0

    def decode(self, modality: str, ids: torch.Tensor) -> Any:
        """Outputs of `modality` from vocabulary ids (B, N); still-masked positions decode as the first code."""
        start = self.vocab.range_of(vocab_modality(modality))[0]
        codes = torch.where(ids == self.vocab.mask_id, start, ids.cpu()) - start
        return self.processor.decode(modality, codes)

    def _condition_rows(self, template, inputs: dict[str, Any]) -> list[list[Any]]:
        if not isinstance(inputs, dict):
            raise InputTypeError(f"`inputs` must be a dict of the task's fields, got {type(inputs).__name__}.")
        fields = {s.field for s in template.condition}
        unknown = sorted(set(inputs) - fields)
        renamed = [name for name in unknown if name.endswith("s") and name[:-1] in fields]
        if renamed:
            raise InputError(f"inputs are named by the template's fields now: use "
                             f"{', '.join(repr(n[:-1]) for n in renamed)} instead of {', '.join(map(repr, renamed))}.")
        if unknown:
            raise InputError(f"task {template.name!r} has no input(s) {unknown}; its inputs are {sorted(fields)}.")
        columns: dict[str, list] = {}
        for segment in template.condition:
            value = inputs.get(segment.field)
            present = self.vocab.has(segment.modality)
            if value is None:
                if present:
                    raise InputError(f"this checkpoint was trained with {segment.modality} tokens; pass "
                                     f"`{segment.field}` for {template.name}.")
                continue
            if not present:
                raise InputError(f"this checkpoint was trained without {segment.modality} tokens; call without "
                                 f"`{segment.field}`.")
            columns[segment.field] = _check_list(segment.field, value)
        sizes = {name: len(values) for name, values in columns.items()}
        if len(set(sizes.values())) > 1:
            raise InputError("inputs differ in length: " + ", ".join(f"{len(v)} {k}s" for k, v in columns.items())
                             + "; give one of each per row.")
        count = next(iter(sizes.values()), 0)
        return [[columns[s.field][i] if s.field in columns else None for s in template.condition]
                for i in range(count)]

    def _apply_known(self, sequences: list, known: Any, modality: str, span: torch.Tensor) -> torch.Tensor:
        try:
            known = torch.as_tensor(np.asarray(known))
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputTypeError(f"the known target codes (`target` of infill, `known` of generate) must be an "
                                 f"integer array (B, N), got {type(known).__name__} ({err}).") from None
        if known.is_floating_point() or known.is_complex() or known.dtype == torch.bool:
            raise InputTypeError(f"the known target codes (`target` of infill, `known` of generate) must be integer "
                                 f"codes, -1 where unknown; got {known.dtype} values.")
        known = known.long()
        if known.numel() and int(known.min()) < -1:
            raise InputError(f"the known target codes hold {int(known.min())}; give codes >= 0, and -1 where the model "
                             "must write them.")
        if known.dim() != 2 or len(known) != len(sequences):
            raise InputError(f"`known` must be (B, N) with B = {len(sequences)} rows and -1 where unknown, got shape "
                             f"{tuple(known.shape)}.")
        for seq, row in zip(sequences, known):
            payload = ((seq.segment_ids == TARGET) & seq.content_mask).nonzero().flatten()[span]  # this target's codes
            if len(payload) != len(row):
                raise InputError(f"`known` rows must have {len(payload)} entries, got {len(row)}.")
            given = row >= 0
            seq.input_ids[payload[given]] = self.vocab.to_id(vocab_modality(modality), row[given])
        return known >= 0

    # ----- tasks --------------------------------------------------------------------------------------------------
    def caption(self, images: Sequence[Any], steps: int | None = None, guidance_scale: float = 1.0,
                seed: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                return_trajectory: bool = False, **scheduler_options: Any):
        """Captions for images (PIL, uint8 arrays or float tensors). Returns list[str], or a PipelineOutput with
        `return_trajectory=True`. Default steps: one per caption token."""
        return self.generate("i2t", {"image": _check_list("images", images)}, steps, guidance_scale, seed,
                             generator, use_cache, return_trajectory, **scheduler_options)

    def generate_text(self, prompts: Sequence[str], steps: int | None = None, seed: int | None = None,
                      generator: torch.Generator | None = None, return_trajectory: bool = False,
                      **scheduler_options: Any):
        """Continue each prompt inside the `lm` template (the prompt is the known start of the text target)."""
        prompts = _check_list("prompts", prompts)
        length = self.processor.length("text")
        known = torch.full((len(prompts), length), -1)
        for row, ids in enumerate(self.processor.encode("text", prompts)):
            if not 0 < len(ids) < length:
                raise InputError(f"prompt {row} has {len(ids)} tokens; give 1 to {length - 1}.")
            known[row, :len(ids)] = torch.as_tensor(ids)
        return self.generate("lm", {}, steps, 1.0, seed, generator, True, return_trajectory, known=known,
                             **scheduler_options)

    def text_to_image(self, prompts: Sequence[str], steps: int = 12, guidance_scale: float = 3.0,
                      seed: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
                      return_trajectory: bool = False, **scheduler_options: Any):
        """Images for prompts. Returns list[PIL.Image], or a PipelineOutput with `return_trajectory=True` whose
        `trajectory_images` hold the decoded image after every step (masked codes drawn as code 0)."""
        out = self.generate("t2i", {"prompt": _check_list("prompts", prompts)}, steps, guidance_scale, seed,
                            generator, use_cache, return_trajectory, **scheduler_options)
        if return_trajectory:
            out.trajectory_images = [self.decode("image", step) for step in out.trajectory]
        return out

    def act(self, images: Sequence[Any], instructions: Sequence[str], state: Any = None, steps: int = 1,
            guidance_scale: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None,
            use_cache: bool = True, return_trajectory: bool = False, executed: Any = None, foresight_steps: int = 0,
            estimate: str = "mean", **scheduler_options: Any):
        """Action chunks [B, H, D] in real units for observations (frames) and instructions (+ state [B, S] when
        the checkpoint was trained with state tokens). One decoding step by default: it had the lowest action error
        and the highest closed-loop success of 1-8 steps (docs/results.md, "Choosing how to decode actions"). Each
        action is the mean of its predicted distribution over the bins (`estimate="mean"`; "mode": the most likely
        bin), which had the lower action error (docs/results.md).

        A checkpoint trained with foresight rows (`sequence.targets: {vla: [future]}`) can first imagine the frame it
        will see k steps ahead, in `foresight_steps` MaskGIT steps, and then write the actions attending to it; with
        0 (the default) the frame stays masked and the actions are written from the observation alone. With
        `return_trajectory=True`, `extras["future"]` holds the imagined frames.

        `executed` [B, d, D] (1 <= d < H) are the actions the robot will still execute from its previous chunk
        while this one is computed (real-time chunking): they are frozen as the first d actions of the new chunk and
        only the rest is unmasked, so the new chunk continues what the robot does. The returned chunk starts with
        them (quantised to the tokenizer's bins); execute from index d."""
        inputs = {"image": _check_list("images", images), "instruction": _check_list("instructions", instructions)}
        batch = len(inputs["image"])
        if state is not None:
            inputs["state"] = self._state_rows(state, batch)
        known = None if executed is None else self._executed_codes(executed, batch)
        if foresight_steps and "future" not in {s.field for s in self.processor.template("vla").extra_targets}:
            raise InputError("`foresight_steps` needs a checkpoint trained with foresight rows "
                             "(sequence.targets: {vla: [future]}); call act() without it.")
        return self.generate("vla", inputs, steps, guidance_scale, seed, generator, use_cache, return_trajectory,
                             known=known, extra_steps={"future": foresight_steps} if foresight_steps else None,
                             estimate=estimate, **scheduler_options)

    def _state_rows(self, state: Any, batch: int) -> list[np.ndarray]:
        if not self.uses_state:
            raise InputError("this checkpoint was trained without state tokens; call act() without `state`.")
        state = _float_array("state", state, "[B, S]")
        dim = self.processor.length("state")
        if state.shape != (batch, dim):
            raise InputError(f"`state` must have shape ({batch}, {dim}), got {state.shape}.")
        return list(state)

    def _executed_codes(self, executed: Any, batch: int) -> np.ndarray:
        executed = _float_array("executed", executed, "[B, d, D]")
        horizon, dim = self.processor.settings.action_horizon, self.processor.settings.action_dim
        if executed.ndim != 3 or executed.shape[0] != batch or executed.shape[2] != dim \
                or not 1 <= executed.shape[1] < horizon:
            raise InputError(f"`executed` must have shape ({batch}, d, {dim}) with 1 <= d < {horizon} (the chunk's "
                             f"horizon), got {executed.shape}.")
        prefix = get_modality("action").prefix_codes(self.processor.tokenizers["action"], executed)
        known = np.full((batch, self.processor.length("action")), -1, dtype=np.int64)
        known[:, :prefix.shape[1]] = prefix
        return known

    def infill(self, task: str, condition: dict[str, Any], target: Any, steps: int = 8,
               guidance_scale: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None,
               return_trajectory: bool = False, **scheduler_options: Any):
        """Complete a partially given target: `target` (B, N) holds the target modality's codes where known and -1
        where the model must write them; `condition` holds the task's inputs by field name (t2i {"prompt"}, i2t
        {"image"}, vla {"image", "instruction", optional "state"}). Returns the completed target codes (B, N)."""
        out = self.generate(task, condition, steps, guidance_scale, seed, generator, True, True, known=target,
                            **scheduler_options)
        if return_trajectory:
            return PipelineOutput(out.codes, out.forward_passes, out.trajectory, codes=out.codes)
        return out.codes
