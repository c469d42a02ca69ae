"""LoRAPrune end to end through train.py: the schedule reaches the target, sparsity is logged per layer,
the export is the sliced model in transformers format, resume continues the schedule, bad paths fail."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import only_run_dir, train_cli
from datamodules.causal_lm import byte_tokenizer
from lightning_modules.loraprune.pruned_llama import PrunedLlamaForCausalLM, load_hf
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


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short LM run with W&B offline: 40 dense warm-up steps (structure for pruning to keep), then 20
    LoRAPrune steps to 50 % with a validation after every step, the test stage and the export."""
    root = tmp_path_factory.mktemp("lm")
    overrides = [o for o in SHORT if not o.startswith(("logger=", "model.dense_warmup_steps="))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        assert train_cli("--config", DEMO, f"run.root={root}", "run.name=r", *overrides, "logger=wandb",
                         "model.dense_warmup_steps=40") == 0
    return root / "loraprune" / "r"


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def _perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=windows).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).exp().item()


def test_schedule_reaches_the_target_and_exports_a_smaller_transformers_model(lm_run: Path) -> None:
    masks = _masks(lm_run / "checkpoints" / "last.ckpt")
    assert len(masks) == 4 * 5  # q, k, v, gate, up of layers 0-3
    for name, mask in masks.items():
        assert mask.mean().item() == 0.5, name
    rows = _rows(lm_run)
    sparsity = [float(r["prune/sparsity/layers.2.mlp"]) for r in rows if r.get("prune/sparsity/layers.2.mlp")]
    assert sparsity == sorted(sparsity) and 0 < sparsity[0] < 0.5 and sparsity[-1] == 0.5
    assert all("prune/sparsity/layers.4.attn" not in r for r in rows)  # the last layer is protected

    model = load_hf(lm_run / "export" / "hf")
    assert isinstance(model, PrunedLlamaForCausalLM)
    assert [len(layer.mlp.down_proj.weight[0]) for layer in model.model.layers] == [128, 128, 128, 128, 256]
    assert [layer.self_attn.k_proj.out_features for layer in model.model.layers] == [16, 16, 16, 16, 32]
    prompt = torch.tensor([[83, 71, 68, 220]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert out.shape == (1, 12)


def test_perplexity_is_far_below_the_untrained_models_on_the_same_windows(lm_run: Path) -> None:
    """The logged test/ppl (2 test batches of 4 windows) is the exported model's on those windows, and a
    small fraction of what the same architecture gives untrained (about the vocabulary size, 258)."""
    from datamodules.causal_lm import CausalLMDataModule
    from lightning_modules.loraprune.lm import load_or_build_llama
    from tenfold.cli import load_config

    cfg = load_config([str(lm_run / "config.yaml")], [])
    data = CausalLMDataModule(cfg.data)
    data.setup("test")
    windows = data.test_set.windows[:8]
    torch.manual_seed(cfg.seed)
    untrained = load_or_build_llama(None, cfg.model.build, byte_tokenizer(), "float32").eval()
    untrained_ppl = _perplexity(untrained, windows)
    exported_ppl = _perplexity(load_hf(lm_run / "export" / "hf"), windows)
    (logged,) = [float(r["test/ppl"]) for r in _rows(lm_run) if r.get("test/ppl")]
    assert logged == pytest.approx(exported_ppl, rel=1e-4)
    assert 200 < untrained_ppl < 400
    assert 1 < logged < 0.25 * untrained_ppl, (logged, untrained_ppl)


def test_wandb_panel_sparsity_against_perplexity_per_pruning_round(lm_run: Path) -> None:
    import numpy as np
    from PIL import Image

    media = next(lm_run.glob("wandb/offline-run-*/files/media"))
    (table,) = media.glob("table/prune/curve_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["step", "round", "sparsity", "val/ppl"]
    rows = content["data"]
    assert len(rows) == 20  # a validation after each of the 20 steps
    steps, rounds, sparsity, ppl = zip(*rows)
    assert list(steps) == list(range(1, 21)) and list(rounds) == sorted(rounds) and rounds[-1] >= 5
    assert list(sparsity) == sorted(sparsity) and sparsity[0] == 0 and sparsity[-1] == 0.5
    val_ppl = {int(r["step"]): float(r["val/ppl"]) for r in _rows(lm_run) if r.get("val/ppl")}
    assert [val_ppl[s - 1] for s in steps] == pytest.approx(list(ppl))  # metrics.csv counts steps from 0
    records = next(lm_run.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()  # protobuf: keys appear verbatim
    assert b"prune/sparsity_vs_val_ppl" in records and b"wandb/line/v0" in records  # the line plot over the table
    (picture,) = media.glob("images/prune/curve_plot_*.png")
    assert len(np.unique(np.asarray(Image.open(picture).convert("L")))) > 8


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
