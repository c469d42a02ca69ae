"""The start-of-fit summary shows FLOPs only where they were measured (an example input ran)."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tenfold.model_summary import MeasuredModelSummary, summary_callbacks


class Tiny(L.LightningModule):
    def __init__(self, example: bool) -> None:
        super().__init__()
        self.net = torch.nn.Linear(16, 32)
        self.example_input_array = torch.zeros(4, 16) if example else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def summary_text(example: bool, tmp_path, caplog: pytest.LogCaptureFixture) -> str:
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[MeasuredModelSummary()], default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(Tiny(example), DataLoader(TensorDataset(torch.zeros(4, 16)), batch_size=4))
    return caplog.text


def test_without_an_example_input_no_flops_are_shown(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    text = summary_text(False, tmp_path, caplog)
    assert "Trainable params" in text and "Linear" in text
    assert "flops" not in text.lower()


def test_with_an_example_input_the_flops_are_counted(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    text = summary_text(True, tmp_path, caplog)
    # 4 x 16 x 32 multiply-adds = 2048 MACs, counted by Lightning as 4096 FLOPs
    total = next(line for line in text.splitlines() if line.rstrip().endswith("Total Flops"))
    assert total.split()[:2] == ["4.1", "K"]
    assert "In sizes" in text and "[4, 16]" in text


def test_summary_off_means_no_callback() -> None:
    assert summary_callbacks(False) == [] and len(summary_callbacks(None)) == 1
