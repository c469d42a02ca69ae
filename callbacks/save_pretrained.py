"""Also write a `transformers` export: `export/hf/` via `save_pretrained`, with the tokenizer.

The platform's export writes `model.pt`; a Hugging Face model additionally gets its own directory, so
it loads back with `from_pretrained` and generates with `generate`. Runs at the end of the export
transforms (it changes nothing), on rank 0 like the rest of the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch import nn


class SavePretrainedAtExport(L.Callback):
    def __init__(self, subdir: str = "hf") -> None:
        self.subdir = subdir
        self._target: Path | None = None
        self._tokenizer: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._target = Path(trainer.default_root_dir) / "export" / self.subdir
        self._tokenizer = getattr(pl_module, "tokenizer", None)

    def transform_for_export(self, model: nn.Module, sample: Any) -> nn.Module:
        if self._target is not None and hasattr(model, "save_pretrained"):
            model.save_pretrained(self._target)
            if self._tokenizer is not None:
                self._tokenizer.save_pretrained(self._target)
        return model
