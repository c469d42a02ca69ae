"""Experiment loggers: W&B by default (offline without an API key), CSV always, TensorBoard on request."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from tenfold.config import LoggerKind, WandbConfig
from tenfold.errors import ConfigError
from tenfold.redact import redact_secrets, redacted_argv

__all__ = ["build_loggers", "redact_secrets", "wandb_mode"]

WANDB_MODES = ("online", "offline", "disabled")


class RedactingWandbLogger(WandbLogger):
    """W&B records the command line when its run starts: it sees secret-looking overrides redacted."""

    @property
    def experiment(self) -> Any:
        with redacted_argv():
            return super().experiment

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(redact_secrets(params) if isinstance(params, dict) else params)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = sorted(next(csv.reader(fh), []))


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_metrics(metrics_csv: Path, checkpoint: dict) -> int:
    """Drop the metrics.csv rows a dead run logged after the checkpoint a resume continues from.

    Rows carry Lightning's logging step (batches that stepped); everything at or past the checkpoint's
    count was logged later and will be logged again. Returns how many rows were dropped.
    """
    loop = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.state_dict") or {}
    stepped = loop.get("_batches_that_stepped")
    if stepped is None or not metrics_csv.is_file():
        return 0
    with open(metrics_csv, newline="") as fh:
        header, *rows = list(csv.reader(fh)) or [[]]
    if "step" not in header:
        return 0
    column = header.index("step")
    kept = [row for row in rows if not (row[column:column + 1] and row[column].isdigit()
                                        and int(row[column]) >= stepped)]
    if len(kept) < len(rows):
        with open(metrics_csv, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *kept])
    return len(rows) - len(kept)


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_mode(cfg: WandbConfig) -> str:
    """Explicit `wandb.mode`, then WANDB_MODE, then online with an API key, else offline.

    Never "online without a key": wandb would prompt for one and hang a batch job.
    """
    mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if _wandb_key_configured() else "offline")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in WANDB_MODES:
        raise ConfigError(f"wandb.mode={mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode == "online" and not _wandb_key_configured():
        raise ConfigError(
            "wandb.mode=online but no W&B API key is configured: run `wandb login` or set "
            "WANDB_API_KEY, or use wandb.mode=offline"
        )
    return mode


def build_loggers(
    kind: LoggerKind, wandb_cfg: WandbConfig, run_dir: Path, run_name: str, wandb_id: str,
    tags: list[str], group: str | None,
) -> list[Logger]:
    if kind is LoggerKind.none:
        return []
    # CSV is always on: metrics.csv in the run dir survives any dashboard outage.
    loggers: list[Logger] = [ResumableCSVLogger(save_dir=run_dir, name="", version="")]
    if kind is LoggerKind.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
    elif kind is LoggerKind.wandb:
        mode = wandb_mode(wandb_cfg)
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            loggers.append(
                RedactingWandbLogger(
                    project=wandb_cfg.project,
                    entity=wandb_cfg.entity,
                    name=run_name,
                    id=wandb_id,
                    save_dir=str(run_dir),
                    offline=mode == "offline",
                    # Lightning refuses log_model with offline=True.
                    log_model=wandb_cfg.log_model and mode == "online",
                    tags=list(tags) or None,
                    group=group,
                    resume="allow",
                )
            )
    return loggers
