"""The method contract: what the runner asks of a method's LightningModule, DataModule and callbacks.

This file is the whole contract; `tenfold/runner.py`, `tenfold/export.py` and `predict.py` call nothing
else. A method provides, in `lightning_modules/<name>/`:

* a `MethodModule` subclass (`module.py`) with `config_class` set. The base class owns the constructor
  (`save_hyperparameters` of the plain, redacted config plus the datamodule's `module_kwargs()`, and a
  typed `self.cfg`), the optimizer/LR-schedule helper and the train-loss log. A method overrides:
    - `optimizer_parameters()` when not every trainable parameter is optimised the same way, and
      `updates_per_epoch()` when an "epoch" is not one pass over the train loader;
    - `export_model()` (default: a float32 eval-mode copy of `self.net`) and `export_spec()` (how to
      rebuild the exported network: `{"target": "lightning_modules.<m>.net:build", "kwargs": {...}}`);
    - `onnx_io()`: ONNX input/output names, or None (the default) for no ONNX file; files of its own go
      under `self.run_dir`;
    - `export_artifacts(model, writer)`: extra files (HF directory, lens prescription, figures), written
      through the `ExportWriter` so every one is atomic and listed in export_meta.yaml.
* a `MethodDataModule` subclass (in `datamodules/`): `check()` fails early with a `DataError` naming the
  key to set; `module_kwargs()` is what the module needs to know about the data (plain types: it is
  saved in the checkpoint); `export_meta()` is typed `ExportMeta`; `export_sample(n)` is the input the
  exporter traces and checks transforms on (None: nothing to trace).
* callbacks (beside the method) may define `transform_for_export(model, sample) -> model`, then
  `export_spec(spec) -> spec` (e.g. re-parameterization: the export is the folded network), and
  `export_artifacts(model, writer)` for files of their own. They get a copy, never the trained model.
* optionally `predict.py` with `predict(run_dir, inputs, options) -> Iterable[dict]` (one JSON line
  each), named in the registry line: `python predict.py <run dir> <inputs...>` dispatches to it.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from torch import Tensor, nn

from tenfold.checkpoint_io import atomic_write
from tenfold.config import from_plain
from tenfold.errors import ConfigError
from tenfold.loggers import redact_secrets
from tenfold.optim import build_optimizer, optimizers_with_schedule, scaled_lr

# --------------------------------------------------------------------------------------------------
# The LightningModule side


class MethodModule(L.LightningModule):
    """Base of every method's LightningModule; see the module docstring for what a method overrides."""

    config_class: ClassVar[type]  # the method's ExperimentConfig subclass
    # What validation logs, as names or fnmatch patterns: `checkpoint.monitor` must match one ("epoch" and
    # "step" always do). None: not declared, so not checked.
    monitors: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: dict, **data_kwargs: Any) -> None:
        super().__init__()
        # Plain types only, so `load_from_checkpoint` needs no arguments and weights-only loading works.
        self.save_hyperparameters({"config": redact_secrets(config), **data_kwargs})
        self.cfg = from_plain(self.config_class, config)

    @property
    def run_dir(self) -> Path:
        """This run's directory (runs/<method>/<run>): where a method writes files of its own."""
        return Path(self.trainer.default_root_dir)

    # ---- optimisation

    def optimizer_parameters(self) -> nn.Module | Iterable[dict]:
        """What the optimizer updates: a module (timm's weight-decay filter applies) or param groups."""
        return self

    def configure_optimizers(self) -> Any:
        """timm optimizer and per-update schedule from `cfg.optim`, the LR scaled by the global batch."""
        trainer = self.trainer
        global_batch = self.cfg.data.batch_size_per_device * trainer.world_size * trainer.accumulate_grad_batches
        lr = scaled_lr(self.cfg.optim, global_batch)
        optimizer = build_optimizer(self.optimizer_parameters(), self.cfg.optim, lr)
        total = int(trainer.estimated_stepping_batches)
        self.log_run_numbers({"optim/global_batch": global_batch, "optim/base_lr": lr, "optim/total_updates": total})
        return optimizers_with_schedule(optimizer, self.cfg.optim, total, self.updates_per_epoch(total))

    def updates_per_epoch(self, total_updates: int) -> int:
        """Optimizer updates per epoch, which converts the config's epoch-based warm-up and milestones."""
        trainer = self.trainer
        if trainer.max_epochs and trainer.max_epochs > 0 and trainer.max_steps == -1:
            return max(1, total_updates // trainer.max_epochs)
        return max(1, int(trainer.num_training_batches) // trainer.accumulate_grad_batches)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # timm schedulers follow the number of completed optimizer updates (smooth warm-up, exact resume).
        scheduler.step_update(num_updates=self.global_step)

    def log_run_numbers(self, numbers: dict[str, float]) -> None:
        """Once-per-run numbers (global batch, LR used) as hyper-parameters of every logger."""
        for logger in self.loggers:
            logger.log_hyperparams(numbers)

    def log_train_loss(self, loss: Tensor, batch_size: int, name: str = "train/loss") -> None:
        # The per-step value is rank 0's own (no collective every step); the epoch mean is synced.
        self.log(f"{name}_step", loss, prog_bar=True, batch_size=batch_size)
        self.log(name, loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)

    # ---- export

    def export_model(self) -> nn.Module:
        """A float32, eval-mode copy of the network, detached from Lightning."""
        return copy.deepcopy(self.net).float().cpu().eval()

    def export_spec(self) -> dict | None:
        """How to rebuild `export_model()` from export_meta.yaml; None: not rebuildable (no model.pt)."""
        return None

    def onnx_io(self) -> tuple[list[str], list[str]] | None:
        """ONNX input and output names (batch axis dynamic), or None for no ONNX file."""
        return None

    def export_artifacts(self, model: nn.Module, writer: ExportWriter) -> None:
        """Extra export files of the method; default none."""


def check_monitor(cfg: Any, module_class: type) -> None:
    """Refuse, at load time, a `checkpoint.monitor` the method never logs (Lightning fails only after an epoch)."""
    monitor = getattr(getattr(cfg, "checkpoint", None), "monitor", None)
    declared = getattr(module_class, "monitors", None)
    if not monitor or declared is None or monitor in ("epoch", "step"):
        return
    if not any(fnmatch.fnmatchcase(monitor, pattern) for pattern in declared):
        raise ConfigError(f"checkpoint.monitor={monitor!r} is not a metric method '{cfg.method}' logs. "
                          f"It logs: {', '.join(declared)} (and epoch, step)")


# --------------------------------------------------------------------------------------------------
# The DataModule side


@dataclass
class ExportMeta:
    """What a user of the export needs to feed it (after timm's pretrained config)."""

    input_size: list[int] | None = None  # (C, H, W) of one input
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific, plain types

    def to_plain(self) -> dict:
        plain = {k: v for k, v in asdict(self).items() if v is not None and k != "extra"}
        return {**plain, **self.extra}


class MethodDataModule(L.LightningDataModule):
    """Base of every method's DataModule: the data config in `self.cfg`, and the runner's four calls."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def check(self) -> None:
        """Fail now (DataError naming the key and the fix) if the data cannot be found or read."""

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the method's module (plain types: they are stored in the checkpoint)."""
        return {}

    def export_meta(self) -> ExportMeta:
        return ExportMeta()

    def export_sample(self, n: int) -> Any:
        """Up to `n` real inputs (one batch) the exporter traces (ONNX) and checks transforms on; None: none."""
        return None


# --------------------------------------------------------------------------------------------------
# Writing export files


class ExportWriter:
    """Writes export files atomically (temp name, then rename) and remembers each for export_meta.yaml."""

    def __init__(self, export_dir: Path) -> None:
        self.dir = Path(export_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, str] = {}  # what -> path relative to the export dir

    def file(self, name: str, write: Callable[[Path], Any], what: str | None = None) -> Path:
        """`write(tmp_path)` produces the file `name`; it appears complete or not at all."""
        path = self.dir / name
        atomic_write(path, write)
        self.files[what or Path(name).stem] = name
        return path

    def text(self, name: str, text: str, what: str | None = None) -> Path:
        return self.file(name, lambda tmp: Path(tmp).write_text(text), what)

    def image(self, name: str, image: Any, what: str | None = None) -> Path:
        """A PIL image, saved in the format its suffix names."""
        fmt = Path(name).suffix.lstrip(".").upper().replace("JPG", "JPEG")
        return self.file(name, lambda tmp: image.save(tmp, format=fmt), what)

    def directory(self, name: str, write: Callable[[Path], Any], what: str | None = None) -> Path:
        """`write(tmp_dir)` fills a directory (e.g. `save_pretrained`); it replaces `name` in one rename."""
        target = self.dir / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.dir))
        try:
            write(tmp)
            if target.exists():
                old = target.with_name(f".{name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.files[what or name] = name + "/"
        return target
