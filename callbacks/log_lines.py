"""Periodic one-line progress reports for batch jobs, where a progress bar would flood the log."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class LogLinesCallback(L.Callback):
    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._last_time = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = time.monotonic()  # the first rate excludes setup and the sanity check

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or batch_idx % trainer.accumulate_grad_batches:
            return
        now = time.monotonic()
        rate = self.every_n_steps / max(now - self._last_time, 1e-9)
        self._last_time = now
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        rank_zero_info(f"epoch {trainer.current_epoch} step {step} lr={lr:.3g} {shown} ({rate:.2f} steps/s)")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Epoch-level values reach callback_metrics only after the *_epoch_end hooks have run.
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        rank_zero_info(f"epoch {trainer.current_epoch} validation: {shown}")
