"""Structural re-parameterization: fold training-time structure into plain layers for inference.

Protocol: a module that folds away defines `reparameterize(self) -> nn.Module`, which returns the
plain module that replaces it (one without `reparameterize`) and computes the same function. It
must not change the module it is called on, so folding can run again after more training (the
official ASR code recomputes its merge every epoch for this reason). `reparameterize_model` applies
it to a copy of a whole model, the shape of timm's `reparameterize_model`.
"""

import copy

import torch
from torch import nn

from tenfold.errors import ExportError


def output_channels(layer: nn.Module) -> int:
    """Number of output channels of a channel-affine layer that `scale_output_channels` accepts."""
    if isinstance(layer, nn.BatchNorm2d) and layer.affine:
        return layer.num_features
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels
    raise TypeError(
        f"cannot fold a channel scale into {type(layer).__name__}; "
        f"supported: affine BatchNorm2d, Conv2d"
    )


@torch.no_grad()
def scale_output_channels(layer: nn.Module, scale: torch.Tensor) -> None:
    """In place, make `layer(x)` return `layer(x) * scale` per output channel; `scale` is (C,).

    BatchNorm: gamma' = s * gamma, beta' = s * beta (running statistics unchanged).
    Conv: each output filter and its bias are multiplied by s.
    """
    channels = output_channels(layer)
    if scale.shape != (channels,):
        raise ValueError(f"scale has shape {tuple(scale.shape)}, expected ({channels},)")
    # Weight is (C,) or (C, C_in/groups, k, k): scale along dim 0.
    layer.weight.mul_(scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
    if layer.bias is not None:
        layer.bias.mul_(scale)


def reparameterize_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with every module that has `reparameterize()` replaced by its result.

    Children are folded before their parents, so a parent always folds into plain layers. The
    original model is never modified.
    """
    model = copy.deepcopy(model)
    _reparameterize_children(model)
    return _reparameterized(model, "model")


def _reparameterize_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        _reparameterize_children(child)
        setattr(module, name, _reparameterized(child, name))


def _reparameterized(module: nn.Module, name: str) -> nn.Module:
    if not hasattr(module, "reparameterize"):
        return module
    folded = module.reparameterize()
    if not isinstance(folded, nn.Module):
        # timm's own re-parameterizable blocks fold in place and return None.
        raise TypeError(
            f"{name}.reparameterize() returned {type(folded).__name__}; tenfold's protocol "
            f"returns the replacement module (see tenfold.reparam)"
        )
    return folded


def foldable_modules(model: nn.Module) -> list[str]:
    """Names of modules in `model` that still define `reparameterize()` (empty once folded)."""
    return [name or "<root>" for name, m in model.named_modules() if hasattr(m, "reparameterize")]


@torch.no_grad()
def reparameterize_checked(model: nn.Module, sample: torch.Tensor, atol: float = 1e-5) -> nn.Module:
    """`reparameterize_model(model)`, checked to give `model`'s outputs on `sample` within `atol` relative to
    their scale: max |diff| <= atol * max(1, max |output|). A float32 fold is exact up to rounding, which grows
    with the outputs (9e-5 at logits near 300 for an untrained ResNet164), while a wrong fold is off by O(1).

    `model` must be in eval mode: a train-mode forward would update its BatchNorm statistics.
    Raises ExportError if the outputs differ or foldable modules are left.
    """
    if model.training:
        raise ValueError("reparameterize_checked needs an eval-mode model; call model.eval()")
    folded = reparameterize_model(model)
    left = foldable_modules(folded)
    if left:
        raise ExportError(
            f"re-parameterization left foldable modules {left}; their reparameterize() must "
            f"return plain modules"
        )
    expected, actual = model(sample), folded(sample)
    max_diff = (expected - actual).abs().max().item()
    tolerance = atol * max(1.0, expected.abs().max().item())
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"re-parameterization changed the outputs on the sample batch: max |diff| = "
            f"{max_diff:.3g} > {tolerance:.3g} (atol {atol:g} x output scale); a reparameterize() is wrong, "
            f"or raise atol if the model runs in reduced precision"
        )
    return folded
