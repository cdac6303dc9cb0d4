"""Run by tests/test_trainer.py under torchrun: train, then write each rank's parameter checksum and losses."""

import json
import sys

import torch

from unimask.config import load_config
from unimask.training.train_config import TrainConfig
from unimask.training.trainer import Trainer

config = load_config(sys.argv[1], TrainConfig)
trainer = Trainer(config)
losses = []
original = trainer.window.add_micro_batch


def recording(result, *rest):
    losses.append(float(result.loss.detach()))
    original(result, *rest)


trainer.window.add_micro_batch = recording
trainer.train()
state = trainer.engine.state_dict_for_export()
checksum = float(sum(v.double().sum() * (i + 1) for i, (k, v) in enumerate(sorted(state.items()))))
with open(f"{config.train.out}/rank{trainer.rank}.json", "w") as handle:
    json.dump({"checksum": checksum, "losses": losses}, handle)
torch.distributed.barrier()
