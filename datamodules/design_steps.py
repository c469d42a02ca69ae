"""A DataModule without data, for methods whose "model" is optimised directly (DeepLens lens design).

Each training item is one optimisation step, so an epoch is `steps_per_epoch` steps (between validations
and checkpoints) and `trainer.max_steps` is the design budget. The "batch" a method samples itself (rays
per field for DeepLens) is `batch_size_per_device`; under DDP every rank draws its own sample and Lightning
averages the gradients, so the global batch is that times the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from tenfold.method import ExportMeta, MethodDataModule


@dataclass
class DesignStepsDataConfig:
    steps_per_epoch: int = 100  # optimisation steps per epoch (validation + last.ckpt after each)
    batch_size_per_device: int = 256  # samples the method draws per step on each device (rays per field)
    eval_batch_size_per_device: int = 1024  # samples per evaluation (rays per field)
    num_workers: int = 0


class StepIndices(Dataset):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (torch.tensor(index),)


class DesignStepsDataModule(MethodDataModule):
    """Nothing to find on disk, nothing the module needs to know, nothing to trace at export."""

    def export_meta(self) -> ExportMeta:
        return ExportMeta(extra={"data": "none (optimisation steps)"})

    def train_dataloader(self) -> DataLoader:
        # Each rank gets steps_per_epoch items after the DistributedSampler splits them.
        world = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(StepIndices(self.cfg.steps_per_epoch * world), batch_size=1, shuffle=False,
                          num_workers=self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(StepIndices(1), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(StepIndices(1), batch_size=1)
