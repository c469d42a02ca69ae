"""Every registered method against the contract in tenfold/method.py, built from its own demo config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import REPO
from tenfold.cli import load_config
from tenfold.config import ExperimentConfig, InferenceConfig, JobConfig, to_plain
from tenfold.export import build_from_spec
from tenfold.method import ExportMeta, MethodDataModule, MethodModule
from tenfold.registry import get_method, load_predictor, locations

METHODS = sorted(locations())
# Where a method's runnable demo lives when it is not under configs/demo/ (its data is built by the tests).
EXAMPLES = {"face_emotion": "configs/examples/face_emotion_demo.yaml"}


def demo_config(method: str) -> str:
    """The method's demo (configs/demo/), else its example, else its own config file (jobs)."""
    if method in EXAMPLES:
        return EXAMPLES[method]
    for folder in ("demo", "examples", "."):
        for path in sorted((REPO / "configs" / folder).glob("*.yaml")):
            if OmegaConf.load(path).get("method") == method:
                return str(path.relative_to(REPO))
    raise AssertionError(f"method '{method}' has no config under configs/")


def overrides(method: str, face_videos: Path, tmp_path: Path) -> list[str]:
    if method == "face_emotion":
        return [f"data.videos_dir={face_videos}", f"data.output_dir={tmp_path}"]
    if method == "critical_scores_import":  # the authors' released scores, shipped with the method
        return ["model.released=lightning_modules/critical_distill/resources/CIFAR10_LossInit.json.gz"]
    return []


def _fields(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


@pytest.mark.parametrize("method", METHODS)
def test_method_meets_the_contract(method: str, face_videos: Path, tmp_path: Path) -> None:
    spec = get_method(method)
    cfg = load_config([demo_config(method)], overrides(method, face_videos, tmp_path))
    assert cfg.method == method and issubclass(spec.config_class, JobConfig)
    if spec.job is not None:  # a job has no Trainer, so no trainer/optim/checkpoint/export keys
        assert spec.module_class is None and not issubclass(spec.config_class, InferenceConfig)
        assert not {"trainer", "optim", "checkpoint", "ema", "export"} & _fields(spec.config_class)
        return
    trained = issubclass(spec.config_class, ExperimentConfig)
    assert trained != spec.inference_only  # inference-only methods carry no optim/export keys
    assert issubclass(spec.module_class, MethodModule) and spec.module_class.config_class is spec.config_class
    assert issubclass(spec.datamodule_class, MethodDataModule)

    datamodule = spec.datamodule_class(cfg.data)
    datamodule.check()
    kwargs = datamodule.module_kwargs()
    OmegaConf.create(kwargs)  # plain types only: they are stored in the checkpoint's hparams
    assert isinstance(datamodule.export_meta(), ExportMeta)
    module = spec.module_class(config=to_plain(cfg), **kwargs)
    assert module.hparams["config"]["method"] == method and module.cfg == cfg
    if not trained:
        return
    assert module.onnx_io() is None or all(isinstance(names, list) for names in module.onnx_io())
    datamodule.export_sample(2)  # any layout, as long as the method's own export hooks accept it
    exported = module.export_model()
    assert isinstance(exported, nn.Module) and not exported.training
    build = module.export_spec()
    if build is not None:  # what export_meta.yaml names rebuilds the exported network exactly
        rebuilt = build_from_spec(build)
        rebuilt.load_state_dict(exported.state_dict(), strict=True)
        for a, b in zip(rebuilt.state_dict().values(), exported.state_dict().values()):
            assert torch.equal(a, b.to(a.dtype))


@pytest.mark.parametrize("method", METHODS)
def test_registry_line_matches_the_registered_method(method: str) -> None:
    where = locations()[method]
    # One folder per method, named after it; the jobs of a method (its scoring, prompt generation) share it.
    folder = where.module.split(".")[1]
    assert where.summary and where.module.startswith("lightning_modules.")
    assert method.startswith(folder) or method.split("_")[0] == folder.split("_")[0]
    if where.predictor is not None:
        assert callable(load_predictor(method))
