"""The matching objectives of DC/DSA (gradient matching) and DM (distribution matching), per class; pure torch.

Both are sums over classes of a term that touches only that class's real and synthetic images, which is what
lets a process handle a subset of the classes (see module.py). Each (iteration, class) pair draws its real
batch and its DSA transform from its own seeded generator, so the terms do not depend on which process
computes them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.critical_distill.augment import apply_transform, sample_transform
from tenfold.errors import ConfigError

# DatasetCondensation `get_loops`: (outer_loop, inner_loop) per IPC.
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(ipc: int, outer: int | None, inner: int | None) -> tuple[int, int]:
    if outer is not None and inner is not None:
        return outer, inner
    if ipc not in DC_LOOPS:
        raise ConfigError(
            f"model.ipc={ipc} has no DC loop setting (the official code exits here): set "
            f"model.dc_outer_loop and model.dc_inner_loop, or use ipc in {sorted(DC_LOOPS)}"
        )
    return DC_LOOPS[ipc]


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, iteration, class, ...) that does not depend on the process."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(*parts))


def sample_real(pool: Tensor, n: int, g: torch.Generator) -> Tensor:
    """min(n, len(pool)) images of one class's kept pool, without replacement (`get_images`)."""
    order = torch.randperm(len(pool), generator=g)[:n]
    return pool[order.to(pool.device)]


def siamese(real: Tensor, syn: Tensor, strategy: str | None, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same DSA transform on the real and the synthetic batch (or none)."""
    if not strategy:
        return real, syn
    t = sample_transform(strategy, real.shape[-1], g)
    return apply_transform(real, t), apply_transform(syn, t)


def dm_class_loss(embed: nn.Module, real: Tensor, syn: Tensor) -> Tensor:
    """||mean psi(real) - mean psi(syn)||^2 for one class (DM, Zhao & Bilen 2023); psi is frozen."""
    with torch.no_grad():
        mean_real = embed(real).mean(dim=0)
    return ((mean_real - embed(syn).mean(dim=0)) ** 2).sum()


def gradient_distance(gw_syn: list[Tensor], gw_real: list[Tensor]) -> Tensor:
    """DC's `match_loss` ('ours'): per layer and output unit, 1 - cos(grad_syn, grad_real); 1-D grads ignored."""
    total = gw_syn[0].new_zeros(())
    for gs, gr in zip(gw_syn, gw_real):
        if gs.ndim == 1:  # biases and norm parameters: `distance_wb` returns 0
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def dc_class_loss(net: nn.Module, real: Tensor, syn: Tensor, label: int) -> Tensor:
    """Gradient matching for one class: D(grad L(syn), grad L(real)) w.r.t. the network's weights."""
    params = [p for p in net.parameters()]
    y_real = torch.full((len(real),), label, dtype=torch.long, device=real.device)
    y_syn = torch.full((len(syn),), label, dtype=torch.long, device=syn.device)
    gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
    gw_syn = torch.autograd.grad(F.cross_entropy(net(syn), y_syn), params, create_graph=True)
    return gradient_distance(list(gw_syn), gw_real)
