"""ASR through train.py: RDNet's `asr:` block and `method: asr` export folded, gate-free networks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from timm.layers import EffectiveSEModule

from conftest import TINY, only_run_dir, train_cli
from lightning_modules.asr.module import ASRModule
from lightning_modules.attention_reparam.attention import ASR, ChannelAttention
from lightning_modules.rdnet.module import RDNetModule
from lightning_modules.rdnet.net import build_rdnet
from tenfold.export import load_export


def _attention_modules(model: torch.nn.Module) -> list[str]:
    kinds = (ASR, ChannelAttention, EffectiveSEModule)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_rdnet_with_asr_exports_a_plain_rdnet(tmp_path: Path) -> None:
    assert train_cli("--config", "configs/demo/rdnet.yaml", "--config", "configs/overlays/rdnet_asr.yaml",
                     f"run.root={tmp_path}", *TINY) == 0
    run = only_run_dir(tmp_path)
    trained = RDNetModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True).eval()
    assert _attention_modules(trained.net)  # trained with ASR gates
    exported, meta = load_export(run / "export")  # strict load into the builder named in the metadata
    assert meta["net"]["kwargs"]["reparameterized"] is True
    assert _attention_modules(exported) == []
    # The plain backbone: the same RDNet without its ESE gates.
    plain = build_rdnet("rdnet_tiny", 10, arch=dict(trained.cfg.model.arch))
    ese = sum(_n_params(m) for m in plain.modules() if isinstance(m, EffectiveSEModule))
    assert ese > 0 and _n_params(exported) == _n_params(plain) - ese
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), trained(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["asr", "asr_se"])
def test_asr_method_exports_the_folded_resnet(variant: str, tmp_path: Path) -> None:
    assert train_cli("--config", "configs/demo/asr.yaml", f"run.root={tmp_path}", f"model.variant={variant}",
                     *TINY) == 0
    run = only_run_dir(tmp_path, "asr")
    trained = ASRModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True).eval()
    exported, _ = load_export(run / "export")
    assert not [n for n, m in exported.named_modules() if isinstance(m, ASR)]
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), trained(x), rtol=0, atol=1e-5)


def test_se_variant_logs_the_stripe_ratio(tmp_path: Path) -> None:
    assert train_cli("--config", "configs/demo/asr.yaml", f"run.root={tmp_path}", "model.variant=se",
                     *TINY, "logger=csv") == 0
    with open(only_run_dir(tmp_path, "asr") / "metrics.csv") as fh:
        ratios = [float(r["attn/stripe_ratio"]) for r in csv.DictReader(fh) if r.get("attn/stripe_ratio")]
    assert ratios and all(r > 0 for r in ratios)
