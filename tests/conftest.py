import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
# DeepSpeed JIT-compiles a CPU communication op (~70 s) once; every test process shares the compiled copy.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/unimask/torch_extensions"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def small_vocab():
    from unimask.vocab import UnifiedVocab

    return UnifiedVocab(text_size=40, modalities={"image": 16, "action": 12, "state": 5})
