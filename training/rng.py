"""Every random number generator a training rank draws from, captured and restored together, so a resumed run
continues exactly as the uninterrupted one would: the masking generator, torch's CPU and CUDA generators (the pixel
encoder's random shifts, dropout), NumPy's and Python's. Each rank has its own: they are saved per rank.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(masking_generator: torch.Generator) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"masking_generator": masking_generator.get_state(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
             "python_rng": [version, list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], masking_generator: torch.Generator) -> None:
    masking_generator.set_state(state["masking_generator"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
    name, keys, pos, has_gauss, gauss = state["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python_rng"]
    random.setstate((version, tuple(internal), gauss_next))
