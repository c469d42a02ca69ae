"""Verification statistics [R: digest section 5]: match rate, p0 with a Clopper-Pearson interval, the
binomial threshold, ROC/AUC over derived vs independent models.

Null hypothesis: the suspect is independent and matches each secret label with probability p0. The
threshold is the smallest k with P[Binomial(N, p0) >= k] <= alpha, tau = k / N (scipy's binom.sf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import binom, binomtest
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc

from tenfold.errors import ConfigError


@torch.no_grad()
def match_count(classifier: nn.Module, outputs: Tensor, labels: Tensor) -> int:
    """How many of the suspect's outputs C* assigns the secret label (checks the class count first)."""
    from lightning_modules.gan_fingerprint.errors import VerificationError

    logits = classifier(outputs)
    if logits.shape[1] <= int(labels.max()):
        raise VerificationError(
            f"the classifier has {logits.shape[1]} classes but the secret labels go up to "
            f"{int(labels.max())}: not the registered classifier"
        )
    return int((logits.argmax(1) == labels).sum())


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={value} must lie strictly between 0 and 1")


def min_queries(p0: float, alpha: float) -> int:
    """The smallest N at which even N of N matches is significant: p0^N <= alpha."""
    n = math.ceil(math.log(alpha) / math.log(p0))
    while binom.sf(n - 1, n, p0) > alpha:  # guard against rounding of the logarithms
        n += 1
    return n


def binomial_threshold(n: int, p0: float, alpha: float) -> int:
    """The smallest k with P[Binomial(n, p0) >= k] <= alpha (binom.sf(k - 1) = P[X >= k])."""
    _check_probability("p0", p0)
    _check_probability("alpha", alpha)
    if binom.sf(n - 1, n, p0) > alpha:
        raise ConfigError(
            f"N={n} fingerprints cannot reach alpha={alpha:g} at p0={p0:g}: even {n}/{n} matches is "
            f"not significant; use N >= {min_queries(p0, alpha)} (model.num_fingerprints)"
        )
    k = int(binom.isf(alpha, n, p0))  # a first guess near the answer; then step to the exact smallest k
    k = max(0, min(n, k))
    while k > 0 and binom.sf(k - 2, n, p0) <= alpha:
        k -= 1
    while binom.sf(k - 1, n, p0) > alpha:
        k += 1
    return k


def threshold_rate(n: int, p0: float, alpha: float) -> float:
    return binomial_threshold(n, p0, alpha) / n


@dataclass(frozen=True)
class P0Estimate:
    value: float  # pooled match rate of the held-out independent generators
    low: float
    high: float  # the threshold uses this upper bound (conservative) [R]
    level: float


def estimate_p0(matches: int, trials: int, level: float = 0.95) -> P0Estimate:
    """p0 pooled over held-out independent generators, with its exact (Clopper-Pearson) interval."""
    ci = binomtest(matches, trials).proportion_ci(confidence_level=level, method="exact")
    value = matches / trials
    # A zero count would give p0 = 0 and an empty test; the interval's upper end is always in (0, 1).
    return P0Estimate(value, float(ci.low), float(ci.high), level)


def roc_auc(derived: list[float], independent: list[float]) -> float:
    """AUC of r as a score separating derived (positive) from independent (negative) models."""
    scores = torch.tensor([*derived, *independent])
    target = torch.tensor([1] * len(derived) + [0] * len(independent))
    return float(binary_auroc(scores, target))
