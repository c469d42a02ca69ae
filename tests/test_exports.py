"""The classifier exports open in the tools users deploy with: `export/model.onnx` in ONNX Runtime (batch 1 and 4,
against torch), `export/model.pt` in `timm.create_model`, and the ASR export is the folded, attention-free net."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import TINY, only_run_dir, train_cli
from tenfold.checkpoint_io import load_weights_only
from tenfold.export import load_export


def _run(root: Path, config: str, method: str, *overrides: str) -> Path:
    assert train_cli("--config", config, f"run.root={root}", *overrides) == 0
    return only_run_dir(root, method)


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ASR demo (ResNet-20, ASR(SE) on psi) for 2 batches, exported folded with ONNX."""
    tiny = [o for o in TINY if not o.startswith("export.onnx")]
    return _run(tmp_path_factory.mktemp("asr"), "configs/demo/asr.yaml", "asr", *tiny)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LoRAPrune ViT demo for 2 short epochs (pruned to 50 % of heads and channels), exported with ONNX."""
    return _run(tmp_path_factory.mktemp("vit"), "configs/demo/loraprune_vit.yaml", "loraprune_vit", "logger=none",
                "model.dense_warmup_steps=0", "trainer.limit_train_batches=4", "trainer.max_epochs=2",
                "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
                "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                "data.batch_size_per_device=16", "model.prune.every_n_steps=2", "export.onnx=true")


@pytest.fixture(scope="module")
def uniform_vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same ViT run with `model.prune.uniform=true`: every block pruned to one shape, no protected block."""
    return _run(tmp_path_factory.mktemp("uniform_vit"), "configs/demo/loraprune_vit.yaml", "loraprune_vit",
                "logger=none", "model.prune.uniform=true", "model.dense_warmup_steps=0",
                "trainer.limit_train_batches=4", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false", "data.batch_size_per_device=16", "model.prune.every_n_steps=2",
                "export.onnx=false")


def _onnx_runtime_matches_torch(run: Path) -> None:
    import onnxruntime

    model, meta = load_export(run / "export")
    session = onnxruntime.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 4):
        images = torch.randn(batch, *meta["input_size"], generator=generator)
        with torch.no_grad():
            expected = model(images).numpy()
        (logits,) = session.run(["logits"], {"images": images.numpy()})
        assert logits.shape == expected.shape == (batch, len(meta["class_names"]))
        assert np.abs(logits - expected).max() <= 1e-5 * np.abs(expected).max(), batch  # relative to the logit scale


def test_rdnet_onnx_runs_in_onnx_runtime_like_torch(finished_run: Path) -> None:
    _onnx_runtime_matches_torch(finished_run)


def test_asr_onnx_runs_in_onnx_runtime_like_torch(asr_run: Path) -> None:
    _onnx_runtime_matches_torch(asr_run)


def test_loraprune_vit_onnx_runs_in_onnx_runtime_like_torch(vit_run: Path) -> None:
    _onnx_runtime_matches_torch(vit_run)


def test_asr_onnx_graph_is_the_plain_resnet(asr_run: Path, tmp_path: Path) -> None:
    """Folded: the exported graph has the plain ResNet-20's operators exactly, so no attention branch (the SE on
    psi: pooling, two convs, a sigmoid and a product per block) is left."""
    from lightning_modules.asr.resnet_cifar import resnet_cifar

    exported = onnx.load(str(asr_run / "export" / "model.onnx"))
    plain = resnet_cifar("baseline", 20, 10, "se").eval()
    torch.onnx.export(plain, (torch.randn(1, 3, 16, 16),), str(tmp_path / "plain.onnx"), input_names=["images"],
                      output_names=["logits"], dynamo=False)
    def ops(graph: onnx.GraphProto) -> Counter:
        return Counter(node.op_type for node in graph.node if node.op_type != "Identity")  # exporter bookkeeping

    assert ops(exported.graph) == ops(onnx.load(str(tmp_path / "plain.onnx")).graph)
    folded = ops(exported.graph)
    assert "Sigmoid" not in folded and folded["GlobalAveragePool"] + folded["ReduceMean"] == 1  # the head's pooling


def test_rdnet_model_pt_loads_into_timm_create_model(finished_run: Path) -> None:
    import timm

    exported, meta = load_export(finished_run / "export")
    net = meta["net"]["kwargs"]  # name, num_classes, arch: the timm arguments
    model = timm.create_model(net["name"], num_classes=net["num_classes"], **net["arch"])
    model.load_state_dict(load_weights_only(finished_run / "export" / "model.pt"), strict=True)
    images = torch.randn(2, *meta["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), exported(images), rtol=0, atol=0)


def test_loraprune_vit_prunes_heads_and_channels_and_exports_the_sliced_vit(vit_run: Path) -> None:
    ckpt = load_weights_only(vit_run / "checkpoints" / "last.ckpt")
    masks = {k: v for k, v in ckpt["state_dict"].items() if k.endswith("loraprune_mask")}
    assert len(masks) == 3 * 2 and all(m.mean().item() == 0.5 for m in masks.values())  # qkv, fc1 of blocks 0-2
    model, meta = load_export(vit_run / "export")
    assert [b.attn.num_heads for b in model.blocks] == [2, 2, 2, 4]
    assert [b.mlp.fc1.out_features for b in model.blocks] == [128, 128, 128, 256]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10) and meta["class_names"][0] == "0"
    # the sparsity-vs-top-1 panel's points, one per validation (kept in the callback's checkpoint state)
    curve = ckpt["callbacks"]["LoRAPruneCallback"]["curve"]
    assert len(curve) == 2 and curve[-1][2] == 0.5 and all(0 <= row[3] <= 1 for row in curve)


def test_uniformly_pruned_vit_model_pt_loads_into_timm_create_model(uniform_vit_run: Path) -> None:
    """What the README's "Using the exports" shows: timm's own constructor, fed export_meta.yaml's `net.timm`."""
    import timm
    import yaml
    from timm.layers import Attention

    export = uniform_vit_run / "export"
    kwargs = yaml.safe_load((export / "export_meta.yaml").read_text())["net"]["timm"]
    name, head_dim = kwargs.pop("name"), kwargs.pop("attn_head_dim")

    class PrunedAttention(Attention):  # pruning keeps each head's width; timm wants a class here
        def __init__(self, dim: int, **kw) -> None:
            super().__init__(dim, attn_head_dim=head_dim, **kw)

    model = timm.create_model(name, attn_layer=PrunedAttention, **kwargs).eval()
    model.load_state_dict(torch.load(export / "model.pt", weights_only=True))  # strict
    assert {b.attn.num_heads for b in model.blocks} == {2} and {b.mlp.fc1.out_features for b in model.blocks} == {128}
    ours, _ = load_export(export)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), ours(images), rtol=0, atol=1e-6)


def test_per_layer_pruned_vit_names_no_timm_arguments(vit_run: Path) -> None:
    import yaml

    assert "timm" not in yaml.safe_load((vit_run / "export" / "export_meta.yaml").read_text())["net"]
