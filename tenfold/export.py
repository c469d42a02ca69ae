"""The export step: `export/model.pt` (state dict), extra artefacts, `export_meta.yaml`, and ONNX if asked.

The order is fixed (see tenfold/method.py for the hooks): the method's `export_model()` copy, then each
callback's `transform_for_export(model, sample)` and `export_spec(spec)` (e.g. re-parameterization), then
`model.pt` and ONNX, then the artefacts of the method and of each callback (`export_artifacts(model,
writer)`). Every file goes through the `ExportWriter` (temp name + rename) and is listed under `files:`
in export_meta.yaml, which is written last: a complete export_meta.yaml means a complete export.
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
from torch import nn

from tenfold.checkpoint_io import load_weights_only
from tenfold.errors import CheckpointError
from tenfold.method import ExportWriter
from tenfold.redact import redact_secrets

log = logging.getLogger("tenfold")
# Only the project's own packages may be named as a network builder in export_meta.yaml.
TRUSTED_BUILDER_PACKAGES = ("lightning_modules.", "tenfold.")


def apply_export_transforms(
    model: nn.Module, sample: Any, spec: dict | None, callbacks: Iterable[Any]
) -> tuple[nn.Module, dict | None]:
    for callback in callbacks:
        if hasattr(callback, "transform_for_export"):
            model = callback.transform_for_export(model, sample)
            if hasattr(callback, "export_spec"):
                spec = callback.export_spec(spec)
    return model, spec


def export_run(module: Any, datamodule: Any, callbacks: Iterable[Any], export_dir: Path, meta: dict,
               sample_size: int, onnx: bool) -> dict[str, str]:
    """The whole export of a trained module; returns what was written (name -> path in export_dir)."""
    callbacks = list(callbacks)
    sample = datamodule.export_sample(sample_size)
    model, spec = apply_export_transforms(module.export_model(), sample, module.export_spec(), callbacks)
    writer = ExportWriter(export_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    writer.file("model.pt", lambda tmp: torch.save(state, tmp), what="weights")
    meta = {**meta, **datamodule.export_meta().to_plain(), "net": spec,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parameters": _num_params(model)}
    io_names = module.onnx_io()
    if onnx and io_names is not None and sample is not None:
        reason = _try_onnx(model, sample, writer, io_names)
        meta["onnx"] = "model.onnx" if reason is None else f"not exported: {reason}"
    for owner in (module, *callbacks):
        if hasattr(owner, "export_artifacts"):
            owner.export_artifacts(model, writer)
    meta["files"] = dict(writer.files)
    writer.text("export_meta.yaml", OmegaConf.to_yaml(OmegaConf.create(redact_secrets(meta))), what="meta")
    return dict(writer.files)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _try_onnx(model: nn.Module, sample: Any, writer: ExportWriter, io_names: tuple[list[str], list[str]]) -> str | None:
    """ONNX where the model allows it; a failure is reported in the metadata, not fatal."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return "the onnx package is not installed (pip install -e .[onnx])"
    inputs, outputs = io_names
    one = tuple(t[:1] for t in sample) if isinstance(sample, (tuple, list)) else (sample[:1],)
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.file("model.onnx", lambda tmp: torch.onnx.export(
                model, one, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=axes, dynamo=False,
            ), what="onnx")
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
    if not meta.get("net"):
        raise CheckpointError(f"{meta_path} names no network to rebuild (method {meta.get('method')}): "
                              "its files are listed under 'files:'")
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
