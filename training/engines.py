"""Process groups and training engines, kept out of the model (torchtitan's habit).

`init_distributed` starts the process group from the launcher's environment (`torchrun`, `deepspeed`), or as a
world of one when no launcher is used; gloo on CPU, NCCL on GPU. An engine wraps the model and optimizer with one
small interface (`backward`, `step`, `save`, `load`, `state_dict_for_export`):

- `DeepSpeedEngine`: ZeRO stage 1/2/3 from a JSON file (batch sizes, clipping and precision are filled in from the
  unimask config so the two never disagree). A client `torch.optim.AdamW` is used, so no DeepSpeed op is built.
- `TorchEngine`: plain PyTorch (DDP when the world is larger than one), for machines without DeepSpeed.

Checkpoints are written under `<run>/checkpoints/<tag>/`; a tag counts only once `complete.json` is in it, and the
`LATEST` pointer is replaced atomically after that, so a crash during a save leaves `LATEST` on the previous good one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from unimask.atomic import atomic_write_text

LATEST = "LATEST"
COMPLETE = "complete.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(use_deepspeed: bool) -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the default process group once."""
    if "RANK" not in os.environ:  # no launcher: a world of one
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT", str(_free_port()))})
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


def _write_marker(directory: Path, tag: str, client_state: dict[str, Any], keep_last: int) -> None:
    atomic_write_text(directory / tag / COMPLETE, json.dumps({"step": client_state.get("step")}))
    atomic_write_text(directory / LATEST, tag)
    tags = sorted(p for p in directory.iterdir() if p.is_dir() and (p / COMPLETE).is_file())
    for old in tags[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_tag(directory: str | Path) -> str | None:
    """The newest complete checkpoint tag, or None."""
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not (Path(directory) / tag / COMPLETE).is_file():
        raise RuntimeError(f"{pointer} names {tag}, which has no {COMPLETE}; the checkpoint folder was edited by hand.")
    return tag


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
        self.micro = 0
        self.last_grad_norm = 0.0

    def __call__(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> bool:
        """Optimizer step at the accumulation boundary; returns whether one was taken."""
        self.micro += 1
        if self.micro % self.grad_accum:
            return False
        if self.grad_clip > 0:
            self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def save(self, directory: Path, tag: str, client_state: dict[str, Any], keep_last: int) -> None:
        if dist.get_rank() == 0:
            (directory / tag).mkdir(parents=True, exist_ok=True)
            state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "client_state": client_state}
            from unimask.atomic import atomic_write

            atomic_write(directory / tag / "state.pt", lambda tmp: torch.save(state, tmp))
            _write_marker(directory, tag, client_state, keep_last)
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
        self.last_grad_norm = 0.0

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            norm = self.engine.get_global_grad_norm()
            self.last_grad_norm = float(norm) if norm is not None else 0.0
        return boundary

    def save(self, directory: Path, tag: str, client_state: dict[str, Any], keep_last: int) -> None:
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)
        dist.barrier()
        if dist.get_rank() == 0:
            _write_marker(directory, tag, client_state, keep_last)
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
