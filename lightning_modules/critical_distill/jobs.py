"""Jobs of critical_distill: utility scores computed here (`critical_scores`) and the authors' released score
files brought in with a dataset fingerprint (`critical_scores_import`).

    python train.py --config configs/critical_distill_scores.yaml model.indicator=LossInit
    python train.py --config configs/critical_distill_import.yaml model.released=.../CIFAR10_LossInit.json \
        data.root=/data/cifar

Both write a score file (selection.py's format: one score per training sample in dataset order, the
dataset's fingerprint, the wall time) that `data.selection.scores` of a distillation run points at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info

from datamodules.critical_distill import load_real_data
from lightning_modules.critical_distill import scores as estimators
from lightning_modules.critical_distill.config import CriticalScoresConfig, CriticalScoresImportConfig, Indicator
from lightning_modules.critical_distill.net import seeded_convnet
from lightning_modules.critical_distill.selection import (
    ScoreFile,
    check_labels,
    check_scores,
    dataset_fingerprint,
    save_scores,
)
from tenfold.errors import ConfigError, DataError
from tenfold.registry import register_job
from tenfold.run_dir import RunDir

DEFAULT_EPOCHS = {Indicator.LossInit: 2, Indicator.LossConverge: 30, Indicator.MonteCarlo: 30}


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def compute_scores(cfg: CriticalScoresConfig) -> tuple[ScoreFile, dict[str, float]]:
    m = cfg.model
    if m.runs < 1:
        raise ConfigError(f"model.runs={m.runs}: at least one run")
    data = load_real_data(cfg.data)
    device = _device(m.device)
    x, y = data.train_x.to(device), data.train_y.to(device)
    check_labels(data.train_y.numpy())
    k, shape = len(data.class_names), data.train_x.shape[1:]

    def make_net(seed: int):
        return seeded_convnet(seed, shape[0], k, shape[1], m.net_width, m.net_depth, device)

    epochs = m.epochs or DEFAULT_EPOCHS[m.indicator]
    start = time.perf_counter()
    extra: dict[str, float] = {}
    if m.indicator is Indicator.LossInit:
        values = estimators.loss_init(x, y, make_net, m.runs, epochs, cfg.seed, m.lr, m.batch)
    elif m.indicator is Indicator.LossConverge:
        values = estimators.loss_converge(x, y, make_net, m.runs, epochs, cfg.seed, m.lr, m.batch)
    else:
        acc_sum, count = estimators.monte_carlo(x, y, data.val_x.to(device), data.val_y.to(device), make_net,
                                                m.runs, epochs, cfg.seed, m.subset_fraction, m.lr, m.batch)
        values, unseen = estimators.monte_carlo_value(acc_sum, count)
        extra["scores/unseen_samples"] = float(unseen)
    seconds = time.perf_counter() - start
    values = check_scores(values.numpy(), len(y), f"{m.indicator.value} estimate")
    source = f"critical_scores {m.indicator.value}: {m.runs} runs x {epochs} epochs, seed {cfg.seed}"
    return ScoreFile(m.indicator.value, values, data.fingerprint, seconds, m.runs, source), extra


@register_job("critical_scores", config=CriticalScoresConfig)
def run_scores(cfg: CriticalScoresConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, Any]:
    score_file, extra = compute_scores(cfg)
    out = save_scores(cfg.model.output or run_dir.path / f"scores_{score_file.indicator}.json", score_file)
    metrics = {"scores/wall_time_s": score_file.wall_time_s, "scores/mean": float(score_file.scores.mean()),
               "scores/min": float(score_file.scores.min()), "scores/max": float(score_file.scores.max()), **extra}
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
    rank_zero_info(f"{score_file.indicator}: {len(score_file.scores)} scores in {score_file.wall_time_s:.1f} s "
                   f"(fingerprint {score_file.fingerprint}) -> {out}")
    return metrics


def import_released(cfg: CriticalScoresImportConfig) -> ScoreFile:
    m = cfg.model
    path = Path(m.released)
    if not path.is_file():
        raise DataError(f"model.released={path}: no such file; point it at the authors' <Dataset>_<Indicator>.json")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"model.released={path}: not JSON ({exc})") from None
    if not isinstance(raw, list):
        raise DataError(f"model.released={path}: expected the authors' format, a JSON list of floats")
    data = load_real_data(cfg.data)
    labels = data.train_y.numpy()
    scores = check_scores(np.asarray(raw, dtype=np.float64), len(labels), f"model.released={path}")
    fingerprint = dataset_fingerprint(labels)
    if m.expected_fingerprint and m.expected_fingerprint != fingerprint:
        raise DataError(f"data.*: this training set has fingerprint {fingerprint}, not the expected "
                        f"{m.expected_fingerprint}: the released scores follow torchvision's training-set order; "
                        "load the data in that order (data.source=cifar10/cifar100 reads torchvision's files)")
    return ScoreFile(m.indicator.value, scores, fingerprint, None, None, f"released: {path.name}")


@register_job("critical_scores_import", config=CriticalScoresImportConfig)
def run_import(cfg: CriticalScoresImportConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, Any]:
    score_file = import_released(cfg)
    out = save_scores(cfg.model.output or run_dir.path / f"scores_{score_file.indicator}.json", score_file)
    rank_zero_info(f"imported {len(score_file.scores)} {score_file.indicator} scores (fingerprint "
                   f"{score_file.fingerprint}) -> {out}")
    return {"scores/n": float(len(score_file.scores)), "scores/mean": float(score_file.scores.mean())}
