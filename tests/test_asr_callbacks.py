"""ReparameterizeForExport (checked folding at export) and AttentionStripes (stripe ratios)."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.reparameterize import ReparameterizeForExport
from lightning_modules.asr.resnet_cifar import resnet_cifar
from lightning_modules.attention_reparam.attention import ASR
from lightning_modules.attention_reparam.stripes_callback import AttentionStripes
from tenfold.errors import ConfigError, ExportError
from tenfold.export import apply_export_transforms, build_from_spec


class _FoldsWrongly(nn.Module):
    """Doubles its input but claims to fold into an identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    def reparameterize(self) -> nn.Module:
        return nn.Identity()


class _FoldsIntoFoldable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reparameterize(self) -> nn.Module:
        return _FoldsIntoFoldable()


def _trained_asr_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = resnet_cifar("asr", depth=11, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ASR):
                m.psi.normal_()
        model(torch.randn(8, 3, 32, 32))  # train-mode pass: non-default BN statistics
    return model.eval()


# --- ReparameterizeForExport -------------------------------------------------------------------


def test_export_transform_folds_and_leaves_the_model_alone():
    model = _trained_asr_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample = torch.randn(4, 3, 32, 32)
    spec = {
        "target": "lightning_modules.asr.resnet_cifar:resnet_cifar",
        "kwargs": {"variant": "asr", "depth": 11, "num_classes": 10},
    }
    exported, spec = apply_export_transforms(model, sample, spec, [ReparameterizeForExport()])
    assert not any(isinstance(m, ASR) for m in exported.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # The rewritten spec rebuilds the plain backbone, which loads the export strictly.
    plain = build_from_spec(spec).eval()
    plain.load_state_dict(exported.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(sample), model(sample), rtol=0, atol=1e-5)


def test_export_transform_rejects_changed_outputs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _FoldsWrongly()).eval()
    with pytest.raises(ExportError, match=r"max \|diff\| = [0-9.e+-]+ > [0-9.e+-]+ \(atol 1e-05 x output scale\)"):
        ReparameterizeForExport().transform_for_export(model, torch.randn(2, 3, 8, 8))


def test_export_guard_scales_with_the_logits():
    """A correct float32 fold of a model with large logits differs by rounding only, and is accepted."""
    model = _trained_asr_resnet()
    with torch.no_grad():
        model.fc.weight.mul_(1e4)  # logits in the hundreds or more, like an untrained ResNet164
    sample = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        scale = model(sample).abs().max().item()
        folded = ReparameterizeForExport(atol=1e-5).transform_for_export(model, sample)
        diff = (folded(sample) - model(sample)).abs().max().item()
    assert scale > 100 and diff <= 1e-5 * scale


def test_export_transform_tolerance_is_configurable():
    model = _trained_asr_resnet()
    sample = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.layer1[0].bn3.psi.add_(1.0)  # changes outputs, but folding stays exact
    ReparameterizeForExport(atol=1e-5).transform_for_export(model, sample)
    with pytest.raises(ExportError):
        ReparameterizeForExport(atol=-1.0).transform_for_export(model, sample)


def test_export_transform_rejects_unfolded_modules_and_train_mode():
    sample = torch.randn(2, 3, 8, 8)
    with pytest.raises(ExportError, match=r"left foldable modules \['1'\]"):
        ReparameterizeForExport().transform_for_export(
            nn.Sequential(nn.Identity(), _FoldsIntoFoldable()).eval(), sample
        )
    with pytest.raises(ValueError, match="eval-mode"):
        ReparameterizeForExport().transform_for_export(_trained_asr_resnet().train(), sample)


# --- AttentionStripes --------------------------------------------------------------------------


class _Classifier(pl.LightningModule):
    def __init__(self, variant: str) -> None:
        super().__init__()
        self.net = resnet_cifar(variant, depth=11, num_classes=4)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(variant: str, callback: AttentionStripes, tmp_path, logger=False) -> pl.Trainer:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(24, 3, 32, 32), torch.randint(0, 4, (24,)))
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    loader = DataLoader(data, batch_size=8)
    trainer.fit(_Classifier(variant), loader, loader)
    return trainer


def test_stripes_logs_ratio_per_attention_layer_and_removes_hooks(tmp_path):
    callback = AttentionStripes(max_samples=16)
    trainer = _fit("se", callback, tmp_path)
    layers = [f"net.layer{i}.0.attention" for i in (1, 2, 3)]
    ratios = [trainer.callback_metrics[f"attn/stripe_ratio/{name}"].item() for name in layers]
    assert all(r > 0 for r in ratios)
    assert trainer.callback_metrics["attn/stripe_ratio"].item() == pytest.approx(sum(ratios) / 3)
    model = trainer.lightning_module
    assert not any(m._forward_hooks for m in model.modules())


def test_stripes_ignores_asr_attention(tmp_path):
    trainer = _fit("asr", AttentionStripes(), tmp_path)
    assert not any(key.startswith("attn/") for key in trainer.callback_metrics)


def test_stripes_heat_map_goes_to_tensorboard(tmp_path, monkeypatch):
    logger = TensorBoardLogger(tmp_path)
    images = []
    monkeypatch.setattr(
        logger.experiment, "add_image", lambda tag, img, *args, **kw: images.append((tag, img))
    )
    _fit("se", AttentionStripes(max_samples=16), tmp_path, logger=logger)
    # The deepest layer by default: 16 inputs (rows) x 256 channels, one grey level per value.
    [(tag, image)] = images
    assert tag == "attn/stripes/net.layer3.0.attention"
    assert image.shape == (16, 256, 3) and image.dtype == np.uint8
    assert len(np.unique(image)) > 2  # grey levels of real attention values, not a blank picture


def test_stripes_rejects_unknown_image_layer(tmp_path):
    with pytest.raises(ConfigError, match="valid: \\[.net.layer1.0.attention."):
        _fit("se", AttentionStripes(image_layer="layer9"), tmp_path)
