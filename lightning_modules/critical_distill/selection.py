"""The paper's static selection (GoldFromOres `drop_utils/drop.py`), per class, in exact integer arithmetic.

For every class c (indices in dataset order), sort the class by its utility score so that the samples to DROP
come first: `<Indicator>_large` drops the largest scores (the sort is on the negated score), `_small` the
smallest; ties keep dataset-index order (a stable sort, as the authors' `sorted`). Then keep the positions
[floor(start * n_c), floor(keep_to * n_c)) of that order, where start = drop_ratio = 1 - keep_ratio
and keep_to = 1 is the official default (a smaller keep_to is their percentile-window experiment).
`random` shuffles each class with a seeded generator instead of the global NumPy RNG.

The authors floor `drop_ratio * n_c` in floating point (and compute drop_ratio = 1 - keep_ratio in floating
point); this module floors the exact rational value of the ratio as written (`Fraction(repr(ratio))`), so it
keeps one sample fewer where their float product falls just below an integer: `official_kept_count` is their
count, for the comparison.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tenfold.errors import ConfigError, DataError

INDICATORS = ("LossInit", "LossConverge", "MonteCarlo")
SCORE_FORMAT = "tenfold.critical_scores/1"


# --------------------------------------------------------------------------------------------------
# Dataset identity


def dataset_fingerprint(labels: np.ndarray) -> str:
    """A hash of n and the label sequence: a score file is only valid for a dataset in the same order."""
    labels = np.asarray(labels, dtype=np.int64)
    digest = hashlib.sha256(np.int64(len(labels)).tobytes() + labels.tobytes()).hexdigest()
    return digest[:16]


def subset_hash(fingerprint: str, kept: np.ndarray) -> str:
    """A hash of the dataset and the kept indices (MTT buffers store it, distillation checks it)."""
    kept = np.sort(np.asarray(kept, dtype=np.int64))
    return hashlib.sha256(fingerprint.encode() + kept.tobytes()).hexdigest()[:16]


def check_labels(labels: np.ndarray) -> int:
    """The number of classes; labels must be exactly 0..K-1, each present."""
    present = np.unique(labels)
    if len(present) == 0 or present[0] != 0 or present[-1] != len(present) - 1:
        span = f"from {present.min()} to {present.max()}" if len(present) else "(none)"
        raise DataError(
            f"training labels must be the contiguous integers 0..K-1; got {len(present)} distinct values {span}"
        )
    return len(present)


# --------------------------------------------------------------------------------------------------
# Score files: {"format", "indicator", "n", "fingerprint", "wall_time_s", "runs", "source", "scores"}


@dataclass
class ScoreFile:
    indicator: str
    scores: np.ndarray  # (n,) float64, in dataset order
    fingerprint: str
    wall_time_s: float | None = None
    runs: int | None = None
    source: str = ""

    def to_json(self) -> dict:
        return {
            "format": SCORE_FORMAT,
            "indicator": self.indicator,
            "n": int(len(self.scores)),
            "fingerprint": self.fingerprint,
            "wall_time_s": self.wall_time_s,
            "runs": self.runs,
            "source": self.source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "scores": [float(s) for s in self.scores],
        }


def check_scores(scores: np.ndarray, n: int, where: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != n:
        raise DataError(
            f"{where}: {len(scores) if scores.ndim == 1 else scores.shape} scores for a training set of "
            f"{n} samples: the score file must hold one score per training sample, in dataset order"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise DataError(f"{where}: {len(bad)} score(s) are NaN or inf (first at index {bad[0]}): recompute the scores")
    return scores


def save_scores(path: str | Path, score_file: ScoreFile) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(score_file.to_json()))
    tmp.replace(path)
    return path


def load_scores(path: str | Path, labels: np.ndarray, where: str = "data.selection.scores") -> ScoreFile:
    """A score file written by `critical_scores` / `critical_scores_import`, checked against this dataset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{where}={path}: no such file; compute scores with method=critical_scores or import the "
            "authors' released file with method=critical_scores_import"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}={path}: not a JSON score file ({exc})") from None
    if isinstance(raw, list):
        raise DataError(
            f"{where}={path} is a bare score list (the authors' release format) without a dataset "
            "fingerprint: import it first with method=critical_scores_import"
        )
    if not isinstance(raw, dict) or raw.get("format") != SCORE_FORMAT:
        raise DataError(f"{where}={path}: not a {SCORE_FORMAT} file")
    n = len(labels)
    scores = check_scores(np.asarray(raw["scores"], dtype=np.float64), n, f"{where}={path}")
    expected = dataset_fingerprint(labels)
    if raw["fingerprint"] != expected:
        raise DataError(
            f"{where}={path} was computed on another dataset or order (fingerprint {raw['fingerprint']}, "
            f"this training set {expected}): the scores must follow this loader's sample order"
        )
    return ScoreFile(
        raw["indicator"], scores, raw["fingerprint"], raw.get("wall_time_s"), raw.get("runs"), raw.get("source", "")
    )


# --------------------------------------------------------------------------------------------------
# The rule


def exact_ratio(value: float, key: str) -> Fraction:
    """The ratio as written (0.9996 -> 9996/10000), not its binary float; must lie in [0, 1]."""
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value}: a ratio must lie in [0, 1]")
    return Fraction(repr(float(value)))


def start_fraction(drop_ratio: float | None, keep_ratio: float | None) -> Fraction:
    """The dropped fraction of each class, from exactly one of drop_ratio / keep_ratio."""
    if (drop_ratio is None) == (keep_ratio is None):
        raise ConfigError("data.selection: set exactly one of drop_ratio and keep_ratio (the other null)")
    if drop_ratio is not None:
        return exact_ratio(drop_ratio, "data.selection.drop_ratio")
    return 1 - exact_ratio(keep_ratio, "data.selection.keep_ratio")


def kept_window(n: int, start: Fraction, keep_to: Fraction) -> tuple[int, int]:
    """Positions [lo, hi) of a class of n in drop-first order that are kept (integer floors of exact products)."""
    return math.floor(start * n), math.floor(keep_to * n)


def official_kept_count(
    n: int, drop_ratio: float | None = None, keep_ratio: float | None = None, keep_to: float = 1.0
) -> int:
    """What the authors' code keeps: `int(drop_ratio * n)` and `int(keep_to * n)` in floating point."""
    r = drop_ratio if drop_ratio is not None else 1.0 - keep_ratio
    return int(keep_to * n) - int(r * n)


def drop_first_order(
    class_indices: np.ndarray, scores: np.ndarray | None, drop_large: bool | None, rng: np.random.Generator | None
) -> np.ndarray:
    """The class's dataset indices, those to drop first; ties by index (stable sort)."""
    if scores is None:
        return rng.permutation(class_indices)
    key = -scores[class_indices] if drop_large else scores[class_indices]
    return class_indices[np.argsort(key, kind="stable")]


@dataclass
class Selection:
    kept: np.ndarray  # sorted dataset indices
    per_class_total: list[int]
    per_class_kept: list[int]
    criterion: str

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / sum(self.per_class_total)


def select(
    labels: np.ndarray,
    criterion: str,
    scores: np.ndarray | None = None,
    drop_ratio: float | None = None,
    keep_ratio: float | None = None,
    keep_to: float = 1.0,
    seed: int = 0,
    min_per_class: int = 1,
    class_names: list[str] | None = None,
) -> Selection:
    """Apply `criterion` ("none", "random" or "<Indicator>_<large|small>") per class; see the module docstring."""
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = check_labels(labels)
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    totals = [len(idx) for idx in per_class]
    if criterion == "none":
        return Selection(np.arange(len(labels)), totals, totals, criterion)
    drop_large = None
    if criterion != "random":
        indicator, _, side = criterion.rpartition("_")
        if indicator not in INDICATORS or side not in ("large", "small"):
            raise ConfigError(
                f"data.selection.criterion={criterion}: use none, random or <indicator>_<large|small> "
                f"with indicator in {', '.join(INDICATORS)} (large/small names what is DROPPED)"
            )
        if scores is None:
            raise ConfigError(f"data.selection.criterion={criterion} needs data.selection.scores (a score file)")
        scores = check_scores(scores, len(labels), "data.selection.scores")
        drop_large = side == "large"
    start = start_fraction(drop_ratio, keep_ratio)
    end = exact_ratio(keep_to, "data.selection.keep_to")
    if end < start:
        raise ConfigError(f"data.selection.keep_to={keep_to} must not be below the dropped fraction {float(start)}")
    rng = np.random.default_rng(seed) if criterion == "random" else None
    kept_parts, kept_counts = [], []
    for c, idx in enumerate(per_class):
        lo, hi = kept_window(len(idx), start, end)
        if hi - lo < min_per_class:
            name = class_names[c] if class_names else str(c)
            need = "a sample" if min_per_class == 1 else f"{min_per_class} samples (model.ipc with real initialisation)"
            raise DataError(
                f"data.selection keeps {hi - lo} of the {len(idx)} samples of class {name} but needs "
                f"{need}: lower drop_ratio (or raise keep_ratio)"
            )
        kept_parts.append(drop_first_order(idx, scores, drop_large, rng)[lo:hi])
        kept_counts.append(hi - lo)
    return Selection(np.sort(np.concatenate(kept_parts)), totals, kept_counts, criterion)
