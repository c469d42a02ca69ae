"""critical_distill's selection rule: exact per-class counts, drop semantics, ties, seeds, fingerprints, and
agreement with the authors' rule on their released CIFAR-10 scores."""

from __future__ import annotations

import gzip
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lightning_modules.critical_distill.selection import (
    ScoreFile,
    dataset_fingerprint,
    load_scores,
    official_kept_count,
    save_scores,
    select,
)
from tenfold.errors import ConfigError, DataError

RESOURCES = Path(__file__).resolve().parents[1] / "lightning_modules" / "critical_distill" / "resources"


def authors_order(labels: np.ndarray, scores: np.ndarray, criterion: str) -> list[list[int]]:
    """GoldFromOres `sample_indices_to_drop`, restated from the notes (§4.2): per class, Python's `sorted` of
    the class's indices on the score (negated for _large), so the samples to drop come first."""
    sign = -1.0 if criterion.endswith("_large") else 1.0
    return [
        sorted((int(i) for i in np.flatnonzero(labels == c)), key=lambda i: sign * scores[i])
        for c in range(int(labels.max()) + 1)
    ]


def authors_kept(order: list[list[int]], drop_ratio: float) -> np.ndarray:
    """... then `keep_from = int(drop_ratio * n_c)`, `keep_to = int(1.0 * n_c)` in floating point."""
    kept = [i for idx in order for i in idx[int(drop_ratio * len(idx)) : int(1.0 * len(idx))]]
    return np.sort(np.array(kept))


def blocks(sizes: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])


# ---- counts


@pytest.mark.parametrize("n", [122, 125, 126, 127, 128, 178, 180, 5000])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.9996])
def test_kept_count_is_n_minus_exact_floor(n: int, ratio: float) -> None:
    labels = blocks([n, 3])
    sel = select(labels, "random", drop_ratio=ratio, min_per_class=0)
    assert sel.per_class_kept[0] == n - math.floor(Fraction(str(ratio)) * n)
    keep = select(labels, "random", keep_ratio=round(1 - ratio, 6), min_per_class=0)
    assert keep.per_class_kept[0] == n - math.floor((1 - Fraction(repr(round(1 - ratio, 6)))) * n)


def test_where_the_official_float_floor_keeps_one_more() -> None:
    # keep 0.3 of 180: the authors compute int((1 - 0.3) * 180) = int(125.99999999999999) = 125 -> 55 kept.
    assert official_kept_count(180, keep_ratio=0.3) == 55
    assert select(blocks([180, 180]), "random", keep_ratio=0.3).per_class_kept == [54, 54]
    # drop 0.7 directly: 0.7 * 180 = 125.99999999999999 as well.
    assert official_kept_count(180, drop_ratio=0.7) == 55
    assert select(blocks([180]), "random", drop_ratio=0.7).per_class_kept == [54]
    # keep 0.1 of 178: 0.9 * 178 = 160.2 floors to 160 either way -> 18 (no difference).
    assert official_kept_count(178, keep_ratio=0.1) == 18
    assert select(blocks([178]), "random", keep_ratio=0.1).per_class_kept == [18]
    # On digits-sized classes the float rule keeps one more in these (size, keep ratio) cases:
    cases = [
        (n, k)
        for n in range(120, 131)
        for k in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)
        if official_kept_count(n, keep_ratio=k) != select(blocks([n]), "random", keep_ratio=k).per_class_kept[0]
    ]
    assert all(
        official_kept_count(n, keep_ratio=k) == select(blocks([n]), "random", keep_ratio=k).per_class_kept[0] + 1
        for n, k in cases
    )
    assert cases == [(120, 0.8), (120, 0.9), (125, 0.8), (130, 0.8), (130, 0.9)]


# ---- semantics


def test_large_small_name_what_is_dropped() -> None:
    labels = blocks([10, 10])
    scores = np.concatenate([np.arange(10.0), np.arange(10.0)[::-1]])
    large = select(labels, "LossInit_large", scores, drop_ratio=0.3)  # drop the 3 largest losses of each class
    assert list(large.kept) == [0, 1, 2, 3, 4, 5, 6, 13, 14, 15, 16, 17, 18, 19]
    small = select(labels, "MonteCarlo_small", scores, drop_ratio=0.3)  # drop the 3 smallest values
    assert list(small.kept) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]


def test_ties_break_by_dataset_index() -> None:
    labels, scores = blocks([6]), np.ones(6)
    for criterion in ("LossInit_large", "LossInit_small"):
        assert list(select(labels, criterion, scores, drop_ratio=0.5).kept) == [3, 4, 5]


def test_percentile_window_keeps_the_middle() -> None:
    labels, scores = blocks([10]), np.arange(10.0)
    sel = select(labels, "LossConverge_small", scores, drop_ratio=0.2, keep_to=0.7)
    assert list(sel.kept) == [2, 3, 4, 5, 6]


def test_none_and_zero_drop_are_the_identity() -> None:
    labels = blocks([5, 7])
    assert list(select(labels, "none").kept) == list(range(12))
    assert list(select(labels, "LossInit_large", np.random.rand(12), drop_ratio=0.0).kept) == list(range(12))


def test_random_is_seeded_and_exact() -> None:
    labels = blocks([125, 127, 130])
    a = select(labels, "random", keep_ratio=0.2, seed=3)
    b = select(labels, "random", keep_ratio=0.2, seed=3)
    c = select(labels, "random", keep_ratio=0.2, seed=4)
    np.testing.assert_array_equal(a.kept, b.kept)
    assert not np.array_equal(a.kept, c.kept) and a.per_class_kept == c.per_class_kept == [25, 26, 26]
    assert all(labels[a.kept].tolist().count(k) == n for k, n in enumerate(a.per_class_kept))


# ---- bad input: each one clear message


def test_bad_inputs() -> None:
    labels = blocks([4, 4])
    with pytest.raises(DataError, match="7 scores for a training set of 8"):
        select(labels, "LossInit_large", np.ones(7), drop_ratio=0.5)
    with pytest.raises(DataError, match=r"2 score\(s\) are NaN or inf \(first at index 1\)"):
        select(labels, "LossInit_large", np.array([0, np.nan, 1, 1, np.inf, 1, 1, 1.0]), drop_ratio=0.5)
    with pytest.raises(ConfigError, match="criterion=Loss_large: use none, random or"):
        select(labels, "Loss_large", np.ones(8), drop_ratio=0.5)
    with pytest.raises(ConfigError, match=r"drop_ratio=1.5: a ratio must lie in \[0, 1\]"):
        select(labels, "random", drop_ratio=1.5)
    with pytest.raises(ConfigError, match="exactly one of drop_ratio and keep_ratio"):
        select(labels, "random", drop_ratio=0.5, keep_ratio=0.5)
    with pytest.raises(DataError, match="keeps 0 of the 4 samples of class 0"):
        select(labels, "random", drop_ratio=1.0)
    with pytest.raises(DataError, match=r"needs 2 samples \(model.ipc"):
        select(labels, "random", drop_ratio=0.75, min_per_class=2)
    with pytest.raises(DataError, match="contiguous integers 0..K-1"):
        select(np.array([0, 0, 2, 2]), "random", drop_ratio=0.5)


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    labels = blocks([5, 5])
    path = save_scores(tmp_path / "s.json", ScoreFile("LossInit", np.arange(10.0), dataset_fingerprint(labels)))
    assert load_scores(path, labels).scores.tolist() == list(range(10))
    with pytest.raises(DataError, match="computed on another dataset or order"):
        load_scores(path, labels[::-1].copy())
    (tmp_path / "bare.json").write_text(json.dumps(list(range(10))))
    with pytest.raises(DataError, match="bare score list .* import it first"):
        load_scores(tmp_path / "bare.json", labels)
    assert dataset_fingerprint(labels) != dataset_fingerprint(np.concatenate([labels, [1]]))


# ---- the authors' released CIFAR-10 scores


def released(name: str) -> np.ndarray:
    with gzip.open(RESOURCES / f"CIFAR10_{name}.json.gz") as fh:
        return np.array(json.load(fh))


@pytest.fixture(scope="module")
def cifar_scores() -> dict[str, np.ndarray]:
    return {name: released(name) for name in ("LossInit", "MonteCarlo")}


def test_released_scores_are_what_the_notes_say(cifar_scores: dict[str, np.ndarray]) -> None:
    li, mc = cifar_scores["LossInit"], cifar_scores["MonteCarlo"]
    assert len(li) == len(mc) == 50_000 and np.isfinite(li).all()
    assert li.mean() == pytest.approx(1.872, abs=1e-3) and li.min() == pytest.approx(0.52, abs=5e-3)
    assert len(mc) - len(np.unique(mc)) == 2145  # ties: selection must break them by index


# CIFAR-10's own labels are not released with the scores (and no CIFAR copy is available offline), so the
# label sequence is stood in for by CIFAR-10's class structure (10 classes x 5000): contiguous blocks, and a
# seeded random interleaving. What is checked: the rule on the real score values (with their real ties) picks
# exactly the authors' indices except at ratios where their float floor differs, which are counted.
GRID = [round(0.05 * i, 2) for i in range(1, 20)] + [0.01, 0.005, 0.001, 0.0004]  # as drop or as keep ratios


@pytest.mark.parametrize("layout", ["blocks", "interleaved"])
@pytest.mark.parametrize("criterion", ["LossInit_large", "LossInit_small", "MonteCarlo_small", "MonteCarlo_large"])
def test_released_scores_select_what_the_authors_rule_selects(cifar_scores: dict, layout: str, criterion: str) -> None:
    labels = blocks([5000] * 10)
    if layout == "interleaved":
        labels = np.random.default_rng(0).permutation(labels)
    scores = cifar_scores[criterion.split("_")[0]]
    differing: dict[str, list[float]] = {"drop": [], "keep": []}
    order = authors_order(labels, scores, criterion)
    for spec in ("drop", "keep"):
        for r in GRID:
            ours = select(labels, criterion, scores, **{f"{spec}_ratio": r}).kept
            their_drop = r if spec == "drop" else 1.0 - r  # the authors take drop_ratio = 1 - keep in float
            theirs = authors_kept(order, their_drop)
            if len(theirs) == len(ours):
                np.testing.assert_array_equal(ours, theirs)
            else:  # their float floor dropped one fewer per class: ours plus each class's next sample in line
                differing[spec].append(r)
                assert len(theirs) == len(ours) + 10 and set(ours) <= set(theirs)
    # With 5000 per class the drop ratios of the grid all floor exactly; two keep ratios do not
    # (1 - 0.8 = 0.19999999999999996 -> 999 dropped, 4001 kept; 1 - 0.9 -> 499 dropped, 4501 kept).
    assert differing == {"drop": [], "keep": [0.8, 0.9]}
