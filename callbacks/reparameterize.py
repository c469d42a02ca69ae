"""Re-parameterize at export: the exported model is the folded one, checked against the trained one.

The platform's export step calls `transform_for_export` of every callback that has it, then
`export_spec`; training itself never sees the folded model. For an export on demand, call
`tenfold.reparam.reparameterize_checked` directly.
"""

from typing import Any

import torch
from lightning.pytorch import Callback
from torch import nn

from tenfold.reparam import reparameterize_checked


class ReparameterizeForExport(Callback):
    """Export `reparameterize_model(model)` after checking it matches `model` within `atol`.

    `atol` is absolute, on the outputs; 1e-5 suits float32 logits. The network's builder must
    accept `reparameterized=True`, meaning "build the folded architecture" (e.g. `resnet_cifar`),
    so that the export loads into what `export_spec` names.
    """

    def __init__(self, atol: float = 1e-5) -> None:
        self.atol = atol

    def transform_for_export(self, model: nn.Module, sample: torch.Tensor) -> nn.Module:
        """The folded copy of eval-mode `model`; raises ExportError if it differs on `sample`."""
        return reparameterize_checked(model, sample, atol=self.atol)

    def export_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The build spec of the folded network: the same builder with `reparameterized=True`."""
        return {**spec, "kwargs": {**spec.get("kwargs", {}), "reparameterized": True}}
