"""Generator files as modules, without unpickling code: a tenfold export folder (`export_meta.yaml` +
`model.pt`, rebuilt by an in-project builder), a `torch.export` program (`.pt2`) or a TorchScript file.

The owner's population (`data.source=i2i`) accepts the first two only: the attacks it simulates (pruning,
weight noise, fine-tuning) work on copies of a generator's weights, and a deep copy of a loaded TorchScript
module has non-leaf parameters that cannot be trained (and `torch.jit` is deprecated since torch 2.9). A
suspect, which is only queried, may be any of the three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.gan_fingerprint.errors import VerificationError
from tenfold.errors import ConfigError
from tenfold.export import load_export

FORMATS = "a tenfold export folder (export_meta.yaml + model.pt), a torch.export program (.pt2)"


class ExportedGenerator(nn.Module):
    """A `torch.export` program whose parameters attacks can reach. Its mode was fixed when it was captured
    (export it in eval mode) and its graph module refuses `.train()`/`.eval()`, so the mode switch stops here."""

    def __init__(self, program: Any) -> None:
        super().__init__()
        self.program = program.module()

    def train(self, mode: bool = True) -> ExportedGenerator:
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.program(x)


def load_generator(path: str, key: str, allow_torchscript: bool = True) -> nn.Module:
    """The generator at `path` in eval mode; `key` is the config key named in errors."""
    p = Path(path)
    if p.is_dir():
        model, _ = load_export(p)
        return model.eval()
    if not p.is_file():
        raise ConfigError(f"{key}: {path} does not exist (expected {FORMATS} or a TorchScript file)")
    if p.suffix != ".pt2" and not allow_torchscript:
        raise ConfigError(
            f"{key}: {path} is not a .pt2 program; the owner's generators must be {FORMATS}, "
            "e.g. torch.export.save(torch.export.export(G.eval(), (x,)), 'G.pt2'): the attacks train copies of them"
        )
    try:
        if p.suffix == ".pt2":
            return ExportedGenerator(torch.export.load(str(p))).eval()
        return torch.jit.load(str(p), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError):
        raise VerificationError(
            f"{key}: {path} is neither {FORMATS} nor a TorchScript file (torch.jit.save)"
        ) from None


def generator_name(path: str) -> str:
    """A readable name: the run folder of an export folder, else the file's stem."""
    p = Path(path)
    return p.parent.name if p.name == "export" else p.stem
