"""The export step: `export/model.pt` (state dict), `export_meta.yaml`, and `model.onnx` when possible.

Callbacks may transform the network first. A callback that defines
`transform_for_export(model, sample) -> nn.Module` gets the eval-mode network (a copy, never the
model being trained) and a batch of real validation images; one that also defines
`export_spec(spec) -> spec` updates how the exported network is rebuilt (e.g. ASR folds its
attention away, so the export loads into the plain backbone). They are applied in callback order.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from tenfold.checkpoint_io import atomic_write, load_weights_only
from tenfold.errors import CheckpointError

log = logging.getLogger("tenfold")
# Only the project's own packages may be named as a network builder in export_meta.yaml.
TRUSTED_BUILDER_PACKAGES = ("lightning_modules.", "tenfold.")


def apply_export_transforms(
    model: nn.Module, sample: Tensor, spec: dict, callbacks: Iterable[Any]
) -> tuple[nn.Module, dict]:
    for callback in callbacks:
        if hasattr(callback, "transform_for_export"):
            model = callback.transform_for_export(model, sample)
            if hasattr(callback, "export_spec"):
                spec = callback.export_spec(spec)
    return model, spec


def write_export(
    model: nn.Module, sample: Tensor, export_dir: Path, meta: dict, onnx: bool
) -> dict[str, Path]:
    """Write the export files atomically; returns what was written."""
    export_dir.mkdir(parents=True, exist_ok=True)
    written = {"model": export_dir / "model.pt", "meta": export_dir / "export_meta.yaml"}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(written["model"], lambda tmp: torch.save(state, tmp))
    meta = dict(meta, exported=time.strftime("%Y-%m-%dT%H:%M:%S%z"), parameters=_num_params(model))
    if onnx:
        onnx_path = export_dir / "model.onnx"
        reason = _try_onnx(model, sample, onnx_path)
        meta["onnx"] = "model.onnx" if reason is None else f"not exported: {reason}"
        if reason is None:
            written["onnx"] = onnx_path
    atomic_write(written["meta"], lambda tmp: OmegaConf.save(OmegaConf.create(meta), tmp))
    return written


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _try_onnx(model: nn.Module, sample: Tensor, path: Path) -> str | None:
    """ONNX where the model allows it; a failure is reported in the metadata, not fatal."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "the onnx package is not installed (pip install -e .[onnx])"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(path, lambda tmp: torch.onnx.export(
                model, (sample[:1],), str(tmp), input_names=["images"], output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
            ))
    except Exception as exc:  # noqa: BLE001 (any exporter failure only skips the optional ONNX file)
        log.warning("ONNX export skipped: %s", exc)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


# --------------------------------------------------------------------------------------------------
# Loading an export (predict.py, tests)


def load_export(export_dir: Path) -> tuple[nn.Module, dict]:
    """Rebuild the exported network from export_meta.yaml and load model.pt strictly."""
    meta_path, weights = export_dir / "export_meta.yaml", export_dir / "model.pt"
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(
            f"{export_dir} has no model.pt + export_meta.yaml: run training with export.enabled=true "
            "(the default) to produce them"
        )
    meta = OmegaConf.to_container(OmegaConf.load(meta_path))
    model = build_from_spec(meta["net"])
    state = load_weights_only(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match the network in {meta_path}: {exc}") from None
    return model.eval(), meta


def build_from_spec(spec: dict) -> nn.Module:
    target = spec["target"]
    module_name, _, func_name = target.partition(":")
    if not module_name.startswith(TRUSTED_BUILDER_PACKAGES):
        raise CheckpointError(f"refusing to import network builder '{target}' from outside this project")
    builder = getattr(importlib.import_module(module_name), func_name)
    return builder(**spec.get("kwargs", {}))
