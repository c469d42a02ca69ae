"""Evaluation: image AUROC/AP, pixel AUROC/AP (exact, torchmetrics) and AUPRO up to an FPR limit.

`AnomalyMetrics` keeps every test image's anomaly map, mask, score and dataset index as concatenated
states, so under DDP `compute()` sees all ranks' images; duplicates that the distributed sampler adds to
even out the shards are dropped by index. DDP results are therefore those of one process.

AUPRO (Bergmann et al.; digest section 2.8): ground-truth regions are the 8-connected components of each
image's mask. For a decreasing threshold t, FPR(t) is the fraction of normal pixels scoring >= t and PRO(t)
the mean over regions of the fraction of the region's pixels scoring >= t. The curve is integrated with
the trapezoid rule from FPR 0 to the limit (the point at the limit interpolated) and divided by the limit,
so a perfect map gives 1 and no map can give more (anomalib <= 2.2 divided by the last FPR instead).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc, binary_average_precision
from torchmetrics.utilities import dim_zero_cat

from tenfold.errors import DataError

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def connected_regions(masks: Tensor) -> Tensor:
    """(N, H, W) binary -> (N, H, W) long region ids, unique over the whole set (0 = normal pixel)."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    offset = 0
    for i, mask in enumerate(masks.cpu().numpy().astype(bool)):
        lab, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += count
    return torch.from_numpy(labels)


def aupro(scores: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> Tensor:
    """Normalised area under the per-region-overlap curve up to `fpr_limit` (0 if no anomalous region)."""
    regions = connected_regions(masks).flatten()
    scores = scores.detach().flatten().double().cpu()
    n_regions = int(regions.max())
    normal = regions == 0
    if n_regions == 0 or int(normal.sum()) == 0:
        return torch.tensor(0.0)
    sizes = torch.bincount(regions, minlength=n_regions + 1).double()
    # Each anomalous pixel adds 1 / (K * |region|) to PRO once the threshold passes its score.
    weight = torch.where(normal, torch.zeros(()).double(), 1.0 / (n_regions * sizes[regions]))
    order = torch.argsort(scores, descending=True)
    s, weight, normal = scores[order], weight[order], normal[order].double()
    pro = torch.cumsum(weight, 0)
    fpr = torch.cumsum(normal, 0) / normal.sum()
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]  # one curve point per distinct threshold
    fpr = torch.cat((torch.zeros(1).double(), fpr[last_of_tie]))
    pro = torch.cat((torch.zeros(1).double(), pro[last_of_tie]))
    inside = fpr <= fpr_limit
    k = int(inside.sum())  # points up to the limit; the next one (if any) is past it
    x, y = fpr[:k], pro[:k]
    if k < len(fpr) and x[-1] < fpr_limit:
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x, y = torch.cat((x, torch.tensor([fpr_limit]).double())), torch.cat((y, y_limit.view(1)))
    return (torch.trapezoid(y, x) / fpr_limit).float()


class AnomalyMetrics(Metric):
    """Image- and pixel-level metrics over a whole test split (one class)."""

    full_state_update = False

    def __init__(self, fpr_limit: float = 0.3, defect_names: list[str] | None = None) -> None:
        super().__init__()
        self.fpr_limit = fpr_limit
        self.defect_names = list(defect_names or [])
        for name in ("index", "score", "label", "defect", "maps", "masks"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, score: Tensor, label: Tensor, defect: Tensor, maps: Tensor, masks: Tensor) -> None:
        self.index.append(index.long())
        self.score.append(score.float())
        self.label.append(label.long())
        self.defect.append(defect.long())
        self.maps.append(maps.float())
        self.masks.append(masks.to(torch.uint8))

    def gathered(self) -> dict[str, Tensor]:
        """All states, one row per distinct dataset index, sorted by index."""
        index = dim_zero_cat(self.index)
        keep = _first_of_each(index)
        states = {name: dim_zero_cat(getattr(self, name))[keep] for name in
                  ("index", "score", "label", "defect", "maps", "masks")}
        return states

    def compute(self) -> dict[str, Tensor]:
        s = self.gathered()
        labels = s["label"]
        if int(labels.sum()) == 0 or int((labels == 0).sum()) == 0:
            what = "no anomalous" if int(labels.sum()) == 0 else "no normal (good)"
            raise DataError(f"the test split has {what} images: AUROC is undefined (it needs both normal and "
                            "defect images under <category>/test/)")
        pix_scores, pix_masks = s["maps"].flatten(), s["masks"].flatten()
        out = {
            "image_auroc": binary_auroc(s["score"], labels, thresholds=None),
            "image_ap": binary_average_precision(s["score"], labels, thresholds=None),
            "pixel_auroc": binary_auroc(pix_scores, pix_masks, thresholds=None),
            "pixel_ap": binary_average_precision(pix_scores, pix_masks, thresholds=None),
            "aupro": aupro(s["maps"], s["masks"], self.fpr_limit).to(pix_scores.device),
        }
        good = s["defect"] < 0
        for k, name in enumerate(self.defect_names):
            rows = good | (s["defect"] == k)
            if int((s["defect"][rows] == k).sum()):
                out[f"image_auroc/{name}"] = binary_auroc(s["score"][rows], labels[rows], thresholds=None)
        return out


def _first_of_each(index: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value, in increasing value order."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[first]
