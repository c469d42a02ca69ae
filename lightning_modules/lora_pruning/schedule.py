"""The progressive sparsity schedule (digest §2.6): cubic, with warm-up and cool-down."""

from __future__ import annotations

import math


def cubic_sparsity(step: int, total: int, final: float, initial: float = 0.0, warmup: float = 0.1,
                   cooldown: float = 0.1) -> float:
    """Target fraction of pruned groups after `step` of `total` optimizer steps.

    `initial` up to warmup*T, `final` after (1-cooldown)*T, and in between
    p(t) = final + (initial - final) * (1 - (t - warmup*T) / ((1 - warmup - cooldown) * T))^3.
    """
    start, end = warmup * total, (1.0 - cooldown) * total
    if step <= start:
        return initial
    if step > end or end <= start:
        return final
    progress = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** 3


def groups_to_prune(n_groups: int, sparsity: float) -> int:
    """floor(n * p), never the whole block (a layer with no heads left cannot run)."""
    return min(math.floor(n_groups * sparsity + 1e-9), n_groups - 1)


def is_pruning_step(step: int, total: int, every: int, cooldown: float = 0.1) -> bool:
    """Prune every `every` steps, and once more at the first step of the cool-down so the run ends at
    exactly `final` (the official code stops one group short per layer: digest §4, pitfall 2)."""
    first_cooldown_step = math.floor((1.0 - cooldown) * total) + 1
    return step % every == 0 or step == min(first_cooldown_step, total)
