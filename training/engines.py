"""Process groups and training engines, kept out of the model (torchtitan's habit).

`init_distributed` starts the process group from the launcher's environment (`torchrun`, `deepspeed`), or as a
world of one when no launcher is used; gloo on CPU, NCCL on GPU. An engine wraps the model and optimizer with one
small interface (`backward`, `step`, `save`, `load`, `state_dict_for_export`):

- `DeepSpeedEngine`: ZeRO stage 1/2/3 from a JSON file (batch sizes, clipping and precision are filled in from the
  unimask config so the two never disagree). A client `torch.optim.AdamW` is used, so no DeepSpeed op is built.
- `TorchEngine`: plain PyTorch (DDP when the world is larger than one), for machines without DeepSpeed.

Checkpoints are written under `<run>/checkpoints/<tag>/`; the trainer adds each rank's generators and marks the tag
complete (`unimask.training.checkpoints`).

Numeric guard: an optimizer step whose loss (on any rank) or gradient norm is not finite is not taken, and
`last_skipped` says so. `TorchEngine` decides on the device: the flag is handed to the fused AdamW kernel as its
`found_inf` (the same mechanism as mixed-precision loss scaling), which then leaves weights, moments and step count
untouched, and `last_skipped` / `last_grad_norm` stay device tensors that the trainer reads when it logs, so a step
never waits for the device. All ranks agree: the loss flag is all-reduced and the gradient norm is computed after
DDP's all-reduce. `DeepSpeedEngine` cannot hand DeepSpeed's optimizer such a flag, so it reads the loss flag back
and skips backward and step on the host.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set when this process made its own world of one (no launcher): its RANK variables are ours, not a launcher's.
_OWN_WORLD_VARIABLES: dict[str, str] = {}


def launched_as_a_rank() -> bool:
    """Whether a launcher (torchrun, deepspeed, our own spawn) started this process as one rank of a world, rather
    than an earlier training in this process having made a world of one."""
    return "RANK" in os.environ and not _OWN_WORLD_VARIABLES


def init_distributed(use_deepspeed: bool) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the default process group once."""
    if "RANK" not in os.environ:  # no launcher: a world of one
        _OWN_WORLD_VARIABLES.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                                     "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))})
        os.environ.update(_OWN_WORLD_VARIABLES)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if use_deepspeed:
            import deepspeed

            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a world of one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def finite_everywhere(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every rank (one all-reduce when a process group is running)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def fused_adamw(param_groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where it exists (CUDA and CPU tensors): one kernel over all parameters, and it
    takes a `found_inf` flag to skip a step on the device."""
    try:
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an old torch or a device without the fused kernel
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas)


def _all_ranks_min(flag: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag


class TorchEngine:
    def __init__(self, model: torch.nn.Module, optimizer, scheduler, grad_clip: float, grad_accum: int, world: int,
                 device: torch.device):
        self.module = model
        self.wrapped = model
        if world > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_clip, self.grad_accum = grad_clip, grad_accum
        self.device = device
        self.fused = bool(optimizer.defaults.get("fused"))
        self.micro = 0
        self.last_grad_norm = torch.zeros((), device=device)  # of the last optimizer step (a device tensor)
        self.last_skipped = torch.zeros((), dtype=torch.bool, device=device)  # whether that step was skipped
        self._losses_finite = torch.ones((), dtype=torch.bool, device=device)  # over this accumulation window

    def __call__(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self._losses_finite = self._losses_finite & torch.isfinite(loss.detach())
        (loss / self.grad_accum).backward()

    def step(self) -> bool:
        """Optimizer step at the accumulation boundary (skipped on the device when a loss or the gradient norm is
        not finite); returns whether this micro-batch was a boundary."""
        self.micro += 1
        if self.micro % self.grad_accum:
            return False
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                              self.grad_clip if self.grad_clip > 0 else float("inf"))
        finite = _all_ranks_min((torch.isfinite(norm) & self._losses_finite).float())
        self.last_grad_norm, self.last_skipped = norm.detach(), finite < 1
        self._losses_finite = torch.ones((), dtype=torch.bool, device=self.device)
        if self.fused:
            self.optimizer.found_inf = 1 - finite
            self.optimizer.step()
        elif bool(finite):  # no fused kernel to hand the flag to: the host decides
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        """Write the model, optimizer, schedule and `client_state` into `directory/tag` (rank 0; all ranks call)."""
        (directory / tag).mkdir(parents=True, exist_ok=True)
        if dist.get_rank() == 0:
            state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "client_state": client_state}
            from unimask.atomic import atomic_torch_save

            atomic_torch_save(directory / tag / "state.pt", state)
        dist.barrier()

    def load(self, directory: Path, tag: str) -> dict[str, Any]:
        state = torch.load(directory / tag / "state.pt", map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["client_state"]

    def state_dict_for_export(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


class DeepSpeedEngine:
    def __init__(self, model: torch.nn.Module, optimizer, scheduler, ds_config: dict[str, Any]):
        import deepspeed

        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
        self.last_grad_norm: Any = 0.0
        self.poisoned = False
        self.last_skipped = False

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        if not finite_everywhere(loss.detach()):
            self.poisoned = True
            return
        self.engine.backward(loss)

    def step(self) -> bool:
        """DeepSpeed steps unless this micro-batch's loss was not finite (then neither backward nor step ran, on every
        rank, DeepSpeed's accumulation counter and schedule stay where they were, and the micro-batch counts as a
        skipped step)."""
        if self.poisoned:
            self.poisoned, self.last_skipped = False, True
            return True
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            norm = self.engine.get_global_grad_norm()
            self.last_grad_norm = norm if norm is not None else 0.0
            self.last_skipped = False
        return boundary

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)
        dist.barrier()

    def load(self, directory: Path, tag: str) -> dict[str, Any]:
        _, client_state = self.engine.load_checkpoint(str(directory), tag=tag)
        return client_state

    def state_dict_for_export(self) -> dict[str, torch.Tensor]:
        if self.stage == 3:
            from deepspeed.runtime.zero.partition_parameters import GatheredParameters

            with GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def deepspeed_config(path: str | Path, micro_batch: int, grad_accum: int, grad_clip: float, bf16: bool,
                     world: int) -> dict[str, Any]:
    """The JSON's ZeRO settings, with batch sizes, clipping and precision taken from the unimask config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train.deepspeed names {path}, which does not exist (see configs/deepspeed/).")
    config = json.loads(path.read_text())
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping", "optimizer", "scheduler", "fp16"):
        config.pop(key, None)
    config.update({"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": grad_accum,
                   "train_batch_size": micro_batch * grad_accum * world, "gradient_clipping": grad_clip,
                   "bf16": {"enabled": bf16}, "zero_allow_untested_optimizer": True,
                   "steps_per_print": 10**9, "wall_clock_breakdown": False})
    return config
