"""Periodic one-line progress reports for batch jobs, where a progress bar would flood the log."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LogLinesCallback(L.Callback):
    """`epoch i/N step s/S lr=... train/loss=... (x steps/s, ETA h:mm:ss)` every `every_n_steps` optimizer steps,
    but at most one line per `min_interval_s` seconds, and a last line when training ends."""

    def __init__(self, every_n_steps: int, min_interval_s: float = 30.0) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.min_interval_s = min_interval_s
        self._last_time = 0.0
        self._last_step = 0
        self._last_line = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = self._last_line = time.monotonic()  # the first rate excludes setup and the sanity check
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or batch_idx % trainer.accumulate_grad_batches:
            return
        if time.monotonic() - self._last_line < self.min_interval_s:
            return
        rank_zero_info(self._line(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > self._last_step:
            rank_zero_info(self._line(trainer))

    def _line(self, trainer: L.Trainer) -> str:
        step, now = trainer.global_step, time.monotonic()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step, self._last_line = now, step, now
        total = int(trainer.estimated_stepping_batches)
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        eta = f", ETA {format_duration((total - step) / rate)}" if rate > 0 and total > step else ""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        return (f"epoch {trainer.current_epoch}{epochs} step {step}/{total} lr={lr:.3g} {shown} "
                f"({rate:.2f} steps/s{eta})")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Epoch-level values reach callback_metrics only after the *_epoch_end hooks have run.
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        rank_zero_info(f"epoch {trainer.current_epoch} validation: {shown}")
