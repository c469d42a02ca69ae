"""Utility scores of critical_distill: computed here (`critical_scores`, sharded over processes) and the
authors' released score files brought in with a dataset fingerprint (`critical_scores_import`, a job).

    python train.py --config configs/critical_distill_scores.yaml model.indicator=LossInit \
        [trainer.devices=2 trainer.strategy=ddp]
    python train.py --config configs/critical_distill_import.yaml model.released=.../CIFAR10_LossInit.json \
        data.root=/data/cifar

Both write a score file (selection.py's format: one score per training sample in dataset order, the
dataset's fingerprint, the wall time) that `data.selection.scores` of a distillation run points at.

`critical_scores` is a `trainer.predict` loop whose batches are run ids (datamodules/critical_distill.py,
`RunIds`): with W processes, round j trains run j * W + rank in every process, then one all_gather brings
the round's contributions to every process, which adds them in run order (scores.py). A run depends only on
(seed, run id), so W processes give the bit-identical scores of one (with the same thread count: CPU kernels
may sum differently with more threads). Rank 0 writes the file.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from callbacks.log_lines import format_duration
from datamodules.critical_distill import CriticalScoresDataModule, load_real_data
from lightning_modules.critical_distill import scores as estimators
from lightning_modules.critical_distill.config import CriticalScoresConfig, CriticalScoresImportConfig, Indicator
from lightning_modules.critical_distill.net import seeded_convnet
from lightning_modules.critical_distill.selection import (
    ScoreFile,
    check_scores,
    dataset_fingerprint,
    save_scores,
)
from tenfold.errors import ConfigError, DataError
from tenfold.media import figure_image, has_media_logger, log_image, pyplot
from tenfold.method import MethodModule
from tenfold.registry import register_job, register_method
from tenfold.run_dir import RunDir

DEFAULT_EPOCHS = {Indicator.LossInit: 2, Indicator.LossConverge: 30, Indicator.MonteCarlo: 30}


@register_method(
    "critical_scores", config=CriticalScoresConfig, datamodule=CriticalScoresDataModule, inference_only=True
)
class CriticalScoresModule(MethodModule):
    config_class = CriticalScoresConfig

    def __init__(self, config: dict, class_names: list[str], image_shape: list[int], fingerprint: str) -> None:
        super().__init__(config, class_names=class_names, image_shape=image_shape, fingerprint=fingerprint)
        m = self.cfg.model
        if m.runs < 1:
            raise ConfigError(f"model.runs={m.runs}: at least one run")
        if m.epochs is not None and m.epochs < 1:
            raise ConfigError(f"model.epochs={m.epochs}: at least one epoch (or null for the indicator's default)")
        if m.indicator is Indicator.MonteCarlo and not 0 < m.subset_fraction <= 1:
            raise ConfigError(f"model.subset_fraction={m.subset_fraction}: a fraction in (0, 1]")
        self.class_names, self.image_shape, self.fingerprint = list(class_names), list(image_shape), fingerprint
        self.epochs = m.epochs or DEFAULT_EPOCHS[m.indicator]
        self._data: tuple[Tensor, ...] | None = None

    def num_runs(self) -> int:
        return self.cfg.model.runs

    def one_run(self, run: int) -> Tensor:
        """Run `run`'s (2, n) float64 contribution (scores.py), on this process's device."""
        m = self.cfg.model
        if self._data is None:  # moved here, outside inference mode: the runs train networks on them
            data = self.trainer.datamodule.data
            self._data = tuple(t.to(self.device) for t in (data.train_x, data.train_y, data.val_x, data.val_y))
        x, y, held_x, held_y = self._data
        channels, size = self.image_shape[0], self.image_shape[1]

        def make_net(seed: int):
            return seeded_convnet(seed, channels, len(self.class_names), size, m.net_width, m.net_depth, self.device)

        args = (make_net, run, self.epochs, self.cfg.seed)
        if m.indicator is Indicator.LossInit:
            return estimators.loss_init_run(x, y, *args, lr=m.lr, batch=m.batch)
        if m.indicator is Indicator.LossConverge:
            return estimators.loss_converge_run(x, y, *args, lr=m.lr, batch=m.batch)
        return estimators.monte_carlo_run(
            x, y, held_x, held_y, *args, subset_fraction=m.subset_fraction, lr=m.lr, batch=m.batch
        )

    def on_predict_start(self) -> None:
        self._start = self._last_line = time.perf_counter()
        self._total = torch.zeros(2, len(self.trainer.datamodule.data.train_y), dtype=torch.float64)
        self._done = 0

    def predict_step(self, batch: Tensor, batch_idx: int) -> None:
        run, n = int(batch), self._total.shape[1]
        with torch.inference_mode(False), torch.enable_grad():  # Lightning predicts under inference mode
            part = self.one_run(run) if run >= 0 else torch.zeros(2, n, dtype=torch.float64)
        # One round: every process's run, added in run order (the same order as one process).
        parts = self.all_gather(part.to(self.device)).reshape(-1, 2, n).cpu()
        ids = self.all_gather(torch.tensor(run, device=self.device)).reshape(-1).tolist()
        pairs = [(r, p) for r, p in zip(ids, parts) if r >= 0]
        self._total = estimators.add_in_run_order(self._total, pairs)
        self._done += len(pairs)
        now, runs = time.perf_counter(), self.num_runs()
        if now - self._last_line >= self.cfg.run.progress_every_s and self._done < runs:
            self._last_line = now
            eta = (now - self._start) / self._done * (runs - self._done)
            rank_zero_info(
                f"{self.cfg.model.indicator.value}: run {self._done}/{runs} "
                f"({self.trainer.world_size} process(es)), ETA {format_duration(eta)}"
            )

    def on_predict_epoch_end(self) -> None:
        m = self.cfg.model
        seconds = time.perf_counter() - self._start
        values, unseen = estimators.finish(m.indicator.value, self._total)
        values = check_scores(values.numpy(), self._total.shape[1], f"{m.indicator.value} estimate")
        if not self.trainer.is_global_zero:
            return
        source = (
            f"critical_scores {m.indicator.value}: {self._done} runs x {self.epochs} epochs, "
            f"seed {self.cfg.seed}, {self.trainer.world_size} process(es)"
        )
        score_file = ScoreFile(m.indicator.value, values, self.fingerprint, seconds, self._done, source)
        out = save_scores(m.output or self.run_dir / f"scores_{score_file.indicator}.json", score_file)
        metrics = {
            "scores/wall_time_s": seconds,
            "scores/mean": float(values.mean()),
            "scores/min": float(values.min()),
            "scores/max": float(values.max()),
            "scores/runs": float(self._done),
        }
        if m.indicator is Indicator.MonteCarlo:
            metrics["scores/unseen_samples"] = float(unseen)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=0)
        if has_media_logger(self.loggers):
            labels = self.trainer.datamodule.data.train_y.numpy()
            log_image(
                self.loggers, "scores/per_class", score_figure(values, labels, self.class_names, m.indicator.value), 0
            )
        rank_zero_info(
            f"{score_file.indicator}: {len(values)} scores from {self._done} runs in {seconds:.1f} s "
            f"on {self.trainer.world_size} process(es) (fingerprint {self.fingerprint}) -> {out}"
        )


def score_figure(values: np.ndarray, labels: np.ndarray, class_names: list[str], indicator: str):
    """Per class, the distribution of its scores (a box plot): what a drop ratio cuts into."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(class_names)), 3))
    ax.boxplot([values[labels == c] for c in range(len(class_names))], showfliers=False)
    ax.set_xticks(range(1, len(class_names) + 1), class_names if len(class_names) <= 20 else None)
    ax.set_xlabel("class")
    ax.set_ylabel(indicator)
    ax.set_title(f"{indicator} per class ({len(values)} samples)")
    return figure_image(fig)


def import_released(cfg: CriticalScoresImportConfig) -> ScoreFile:
    m = cfg.model
    path = Path(m.released)
    if not path.is_file():
        raise DataError(f"model.released={path}: no such file; point it at the authors' <Dataset>_<Indicator>.json")
    try:  # the authors' .json, or it gzipped (as resources/ ships it)
        raw = json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"model.released={path}: not JSON ({exc})") from None
    if not isinstance(raw, list):
        raise DataError(f"model.released={path}: expected the authors' format, a JSON list of floats")
    data = load_real_data(cfg.data)
    labels = data.train_y.numpy()
    scores = check_scores(np.asarray(raw, dtype=np.float64), len(labels), f"model.released={path}")
    fingerprint = dataset_fingerprint(labels)
    if m.expected_fingerprint and m.expected_fingerprint != fingerprint:
        raise DataError(
            f"data.*: this training set has fingerprint {fingerprint}, not the expected "
            f"{m.expected_fingerprint}: the released scores follow torchvision's training-set order; "
            "load the data in that order (data.source=cifar10/cifar100 reads torchvision's files)"
        )
    return ScoreFile(m.indicator.value, scores, fingerprint, None, None, f"released: {path.name}")


@register_job("critical_scores_import", config=CriticalScoresImportConfig)
def run_import(cfg: CriticalScoresImportConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, Any]:
    score_file = import_released(cfg)
    out = save_scores(cfg.model.output or run_dir.path / f"scores_{score_file.indicator}.json", score_file)
    rank_zero_info(
        f"imported {len(score_file.scores)} {score_file.indicator} scores (fingerprint "
        f"{score_file.fingerprint}) -> {out}"
    )
    return {"scores/n": float(len(score_file.scores)), "scores/mean": float(score_file.scores.mean())}
