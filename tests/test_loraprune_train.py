"""LoRAPrune end to end through train.py: the schedule reaches the target, sparsity is logged per layer,
the export is the sliced model in transformers format, resume continues the schedule, bad paths fail."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import only_run_dir, train_cli
from datamodules.causal_lm import byte_tokenizer
from lightning_modules.loraprune.pruned_llama import PrunedLlamaForCausalLM
from tenfold.checkpoint_io import load_weights_only

DEMO = "configs/demo/loraprune_lm.yaml"
# 4 prunable layers (0-3) x (4 KV groups, 256 channels); 20 optimizer steps, pruning every 2.
SHORT = ["logger=csv", "model.dense_warmup_steps=0", "trainer.limit_train_batches=5", "trainer.max_epochs=4",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
         "data.batch_size_per_device=4", "model.prune.every_n_steps=2", "model.prune.total_steps=20"]


def _masks(ckpt: Path) -> dict[str, torch.Tensor]:
    state = load_weights_only(ckpt)["state_dict"]
    return {k: v for k, v in state.items() if k.endswith("loraprune_mask")}


def test_schedule_reaches_the_target_and_exports_a_smaller_transformers_model(tmp_path: Path) -> None:
    assert train_cli("--config", DEMO, f"run.root={tmp_path}", *SHORT) == 0
    run = only_run_dir(tmp_path, "loraprune")
    masks = _masks(run / "checkpoints" / "last.ckpt")
    assert len(masks) == 4 * 5  # q, k, v, gate, up of layers 0-3
    for name, mask in masks.items():
        assert mask.mean().item() == 0.5, name
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    sparsity = [float(r["prune/sparsity/layers.2.mlp"]) for r in rows if r.get("prune/sparsity/layers.2.mlp")]
    assert sparsity == sorted(sparsity) and 0 < sparsity[0] < 0.5 and sparsity[-1] == 0.5
    assert all("prune/sparsity/layers.4.attn" not in r for r in rows)  # the last layer is protected
    test_ppl = [float(r["test/ppl"]) for r in rows if r.get("test/ppl")]
    assert len(test_ppl) == 1 and 1 < test_ppl[0] < 258

    model = PrunedLlamaForCausalLM.from_pretrained(run / "export" / "hf").eval()
    assert [len(layer.mlp.down_proj.weight[0]) for layer in model.model.layers] == [128, 128, 128, 128, 256]
    assert [layer.self_attn.k_proj.out_features for layer in model.model.layers] == [16, 16, 16, 16, 32]
    prompt = torch.tensor([[83, 71, 68, 220]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert out.shape == (1, 12)


@pytest.mark.slow
def test_resume_continues_the_schedule_exactly(tmp_path: Path) -> None:
    assert train_cli("--config", DEMO, f"run.root={tmp_path / 'a'}", *SHORT, "run.test=false",
                     "export.enabled=false") == 0
    straight = only_run_dir(tmp_path / "a", "loraprune") / "checkpoints" / "last.ckpt"
    b = tmp_path / "b"
    assert train_cli("--config", DEMO, f"run.root={b}", *SHORT, "trainer.max_epochs=2", "run.name=r",
                     "run.test=false", "export.enabled=false") == 0
    half = _masks(b / "loraprune" / "r" / "checkpoints" / "last.ckpt")
    assert 0 < sum(float((1 - m).sum()) for m in half.values())  # pruning had started
    assert train_cli("--config", DEMO, f"run.root={b}", *SHORT, "run.name=r", f"resume={b / 'loraprune' / 'r'}",
                     "run.test=false", "export.enabled=false") == 0
    resumed = load_weights_only(b / "loraprune" / "r" / "checkpoints" / "last.ckpt")
    expected = load_weights_only(straight)
    assert resumed["global_step"] == expected["global_step"] == 20
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    ema, ema_expected = resumed["callbacks"]["LoRAPruneCallback"], expected["callbacks"]["LoRAPruneCallback"]
    assert ema["step"] == 20
    for name, value in ema_expected["ema"].items():
        torch.testing.assert_close(ema["ema"][name], value, rtol=0, atol=1e-6)


def test_paper_config_names_the_missing_model_and_data(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_cli("--config", "configs/loraprune.yaml", f"run.root={tmp_path}", "--validate-only") == 2
    err = capsys.readouterr().err
    assert "model.base_path" in err and "data.source" in err
    assert train_cli("--config", "configs/loraprune.yaml", f"run.root={tmp_path}", "--validate-only",
                     f"model.base_path={tmp_path}", "data.source=json") == 2
    assert "data.files.train" in capsys.readouterr().err
    assert train_cli("--config", "configs/loraprune.yaml", f"run.root={tmp_path}", "--validate-only",
                     f"model.base_path={tmp_path}", "data.source=grammar") == 2
    assert f"data.vocabulary={tmp_path} holds no tokenizer files" in capsys.readouterr().err
    byte_tokenizer().save_pretrained(tmp_path / "tokenizer")
    assert train_cli("--config", "configs/loraprune.yaml", f"run.root={tmp_path}", "--validate-only",
                     f"model.base_path={tmp_path}", "data.source=grammar", f"data.vocabulary={tmp_path / 'tokenizer'}",
                     f"data.cache_dir={tmp_path / 'cache'}") == 2
    assert f"model.base_path={tmp_path} has no config.json" in capsys.readouterr().err


def test_vit_demo_prunes_heads_and_channels_and_exports_the_sliced_vit(tmp_path: Path) -> None:
    from tenfold.export import load_export

    assert train_cli("--config", "configs/demo/loraprune_vit.yaml", f"run.root={tmp_path}", "logger=none",
                     "model.dense_warmup_steps=0", "trainer.limit_train_batches=4", "trainer.max_epochs=2",
                     "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
                     "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                     "data.batch_size_per_device=16", "model.prune.every_n_steps=2") == 0
    run = only_run_dir(tmp_path, "loraprune_vit")
    masks = _masks(run / "checkpoints" / "last.ckpt")
    assert len(masks) == 3 * 2 and all(m.mean().item() == 0.5 for m in masks.values())  # qkv, fc1 of blocks 0-2
    model, meta = load_export(run / "export")
    assert [b.attn.num_heads for b in model.blocks] == [2, 2, 2, 4]
    assert [b.mlp.fc1.out_features for b in model.blocks] == [128, 128, 128, 256]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10) and meta["class_names"][0] == "0"
