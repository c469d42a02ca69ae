"""AUPRO reference cases (digest section 6.5), exact pixel metrics, and the DDP de-duplication."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from lightning_modules.anomaly_aug.metrics import AnomalyMetrics, aupro, connected_regions
from lightning_modules.anomaly_aug.net import image_score
from tenfold.errors import DataError


def _ramp() -> torch.Tensor:
    return (torch.arange(2800, dtype=torch.float64) / 2800).reshape(1, 400, 7)


def _columns(*cols: int) -> torch.Tensor:
    mask = torch.zeros(1, 400, 7)
    mask[..., list(cols)] = 1
    return mask


@pytest.mark.parametrize("masks", [_columns(3), _columns(1, 3, 5)], ids=["one_column", "three_columns"])
def test_aupro_reference_cases_are_one_sixth(masks: torch.Tensor) -> None:
    assert float(aupro(_ramp(), masks, 1 / 3)) == pytest.approx(1 / 6, abs=1e-3)


def test_aupro_both_maps_together_and_the_extremes() -> None:
    both = aupro(torch.cat((_ramp(), _ramp())), torch.cat((_columns(3), _columns(1, 3, 5))), 1 / 3)
    assert float(both) == pytest.approx(1 / 6, abs=1e-3)
    mask = _columns(3)
    assert float(aupro(mask.double(), mask, 0.3)) == pytest.approx(1.0, abs=1e-6)  # perfect map (with ties)
    assert float(aupro(torch.full_like(mask, 0.5), mask, 0.3)) == pytest.approx(0.15, abs=1e-6)  # random = limit/2
    assert float(aupro(_ramp(), torch.zeros_like(mask), 0.3)) == 0.0


def test_aupro_never_exceeds_one() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        masks = (torch.rand(3, 24, 24, generator=g) > torch.rand(1, generator=g)).float()
        noise = torch.rand(3, 24, 24, generator=g)
        scores = masks * torch.rand(1, generator=g) + noise * torch.rand(1, generator=g)
        scores = (scores * 4).round() / 4 if trial % 3 == 0 else scores  # many ties
        value = float(aupro(scores, masks, float(torch.rand(1, generator=g)) * 0.9 + 0.05))
        assert 0.0 <= value <= 1.0 + 1e-9


def test_regions_are_8_connected_per_image() -> None:
    masks = torch.zeros(2, 5, 5)
    masks[0, 0, 0] = masks[0, 1, 1] = 1  # diagonal neighbours: one region
    masks[0, 4, 4] = 1
    masks[1, 2, 2] = 1  # another image: its own region
    regions = connected_regions(masks)
    assert regions.max() == 3 and regions[0, 0, 0] == regions[0, 1, 1] != regions[0, 4, 4]


def _fill(metric: AnomalyMetrics, order: list[int], maps: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
          scores: torch.Tensor, batch: int) -> None:
    for start in range(0, len(order), batch):
        rows = torch.tensor(order[start:start + batch])
        metric.update(rows, scores[rows], labels[rows], torch.where(labels[rows] > 0, 0, -1), maps[rows], masks[rows])


def test_metrics_are_exact_and_ignore_duplicated_samples() -> None:
    g = torch.Generator().manual_seed(1)
    n = 12
    labels = torch.tensor([0] * 6 + [1] * 6)
    masks = torch.zeros(n, 16, 16, dtype=torch.uint8)
    masks[6:, 4:9, 4:9] = 1
    maps = 0.5 * torch.rand(n, 16, 16, generator=g) + 0.4 * masks
    scores = image_score(maps, 3)
    one = AnomalyMetrics(0.3, ["defect"])
    _fill(one, list(range(n)), maps, masks, labels, scores, 5)
    padded = AnomalyMetrics(0.3, ["defect"])  # a DistributedSampler's shards: reordered, two repeats
    _fill(padded, [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11, 0, 1], maps, masks, labels, scores, 4)
    a, b = one.compute(), padded.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert float(a[key]) == float(b[key]), key
    assert float(a["image_auroc"]) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(a["pixel_auroc"]) == pytest.approx(roc_auc_score(masks.flatten(), maps.flatten()), abs=1e-6)
    assert float(a["pixel_ap"]) == pytest.approx(average_precision_score(masks.flatten(), maps.flatten()), abs=1e-5)


def test_a_test_split_without_anomalies_is_a_clear_error() -> None:
    metric = AnomalyMetrics()
    metric.update(torch.arange(2), torch.rand(2), torch.zeros(2), -torch.ones(2), torch.rand(2, 4, 4),
                  torch.zeros(2, 4, 4))
    with pytest.raises(DataError, match="no anomalous"):
        metric.compute()


def test_image_score_is_the_max_of_the_mean_filtered_map() -> None:
    amap = torch.zeros(1, 32, 32)
    amap[0, 3, 3] = 1.0  # one hot pixel
    amap[0, 20:25, 20:25] = 0.5  # a 5x5 block
    assert float(image_score(amap, 1)) == 1.0
    # 5x5 mean filter: the block's window averages 0.5, the hot pixel's only 1/25
    assert float(image_score(amap, 5)) == pytest.approx(0.5, abs=1e-6)
    assert float(image_score(amap[:, :10, :10], 5)) == pytest.approx(1 / 25, abs=1e-6)


def test_all_classes_table_has_the_uniform_mean() -> None:
    from lightning_modules.anomaly_aug.all_classes import table

    rows = {"a": dict.fromkeys(("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"), 0.9),
            "b": dict.fromkeys(("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"), 0.5)}
    last = table(rows).splitlines()[-1]
    assert last.startswith("| **mean** | **70.0** |") and last.count("**70.0**") == 5
