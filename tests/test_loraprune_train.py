"""LoRAPrune end to end through train.py: the schedule reaches the target, sparsity is logged per layer,
the export is the sliced model in transformers format, resume continues the schedule, bad paths fail."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import error_line, only_run_dir, train_cli
from datamodules.causal_lm import byte_tokenizer
from lightning_modules.loraprune.pruned_llama import PrunedLlamaForCausalLM, load_hf
from tenfold.checkpoint_io import load_weights_only

DEMO = "configs/demo/loraprune_lm.yaml"
# 4 prunable layers (0-3) x (4 KV groups, 256 channels); 20 optimizer steps, pruning every 2.
SHORT = ["logger=csv", "model.dense_warmup_steps=0", "trainer.limit_train_batches=5", "trainer.max_epochs=4",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
         "data.batch_size_per_device=4", "model.prune.every_n_steps=2", "model.prune.total_steps=20",
         "trainer.val_check_interval=1.0"]  # validations (and last.ckpt) at epoch ends: resume is bit-exact there


def _masks(ckpt: Path) -> dict[str, torch.Tensor]:
    state = load_weights_only(ckpt)["state_dict"]
    return {k: v for k, v in state.items() if k.endswith("loraprune_mask")}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short LM run with W&B offline: 40 dense warm-up steps (structure for pruning to keep), then 4 epochs of
    5 LoRAPrune steps to 50 % with a validation after each epoch, the test stage and the export."""
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
    assert len(rows) == 4  # a validation after each epoch of 5 steps
    steps, rounds, sparsity, ppl = zip(*rows)
    assert list(steps) == [5, 10, 15, 20] and list(rounds) == sorted(rounds) and rounds[-1] >= 5
    assert list(sparsity) == sorted(sparsity) and 0 < sparsity[0] < sparsity[1] and sparsity[-1] == 0.5
    val_ppl = {int(r["step"]): float(r["val/ppl"]) for r in _rows(lm_run) if r.get("val/ppl")}
    assert [val_ppl[s - 1] for s in steps] == pytest.approx(list(ppl))  # metrics.csv counts steps from 0
    records = next(lm_run.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()  # protobuf: keys appear verbatim
    assert b"prune/sparsity_vs_val_ppl" in records and b"wandb/line/v0" in records  # the line plot over the table
    (picture,) = media.glob("images/prune/curve_plot_*.png")
    assert len(np.unique(np.asarray(Image.open(picture).convert("L")))) > 8


# Run with `python -I` from a temp dir: no cwd or PYTHONPATH on sys.path. The project is pip-installed (editable) in
# the test venv, so its packages are also blocked: this is a venv with torch and transformers but no tenfold.
CLEAN_VENV_GENERATE = """
import importlib.abc, json, sys

class NoProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tenfold", "lightning_modules", "datamodules", "callbacks"):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, NoProject())
try:
    import tenfold  # noqa: F401
    sys.exit("tenfold is importable here")
except ImportError:
    pass
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, remote = sys.argv[1], sys.argv[2] == "remote"
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
ids = tokenizer("the cat", return_tensors="pt").input_ids
out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                     pad_token_id=tokenizer.pad_token_id)
print(json.dumps({"class": type(model).__name__, "module": type(model).__module__, "tokens": out[0].tolist()}))
"""


def _generate_without_tenfold(folder: Path, tmp_path: Path, remote: bool) -> dict:
    script = tmp_path / "generate.py"
    script.write_text(CLEAN_VENV_GENERATE)
    env = {"PATH": os.environ.get("PATH", ""), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-I", str(script), str(folder), "remote" if remote else "stock"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _project_tokens(model: torch.nn.Module) -> list[int]:
    ids = byte_tokenizer()("the cat", return_tensors="pt").input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                         pad_token_id=byte_tokenizer().pad_token_id)
    return out[0].tolist()


def test_hf_export_loads_with_remote_code_where_tenfold_is_not_installed(lm_run: Path, tmp_path: Path) -> None:
    folder = lm_run / "export" / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "modeling_pruned_llama.PrunedLlamaConfig",
                                  "AutoModelForCausalLM": "modeling_pruned_llama.PrunedLlamaForCausalLM"}
    assert (folder / "modeling_pruned_llama.py").is_file()
    clean = _generate_without_tenfold(folder, tmp_path, remote=True)
    assert clean["class"] == "PrunedLlamaForCausalLM" and clean["module"].startswith("transformers_modules.")
    assert clean["tokens"] == _project_tokens(load_hf(folder))
    # ...and the same tokens as the masked (unsliced) model of the best checkpoint, which the export came from
    from lightning_modules.loraprune.module import LoRAPruneLM

    module = LoRAPruneLM.load_from_checkpoint(lm_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert clean["tokens"] == _project_tokens(module.model.eval())


def test_uniform_pruning_exports_a_stock_llama_that_needs_no_remote_code(tmp_path: Path) -> None:
    replaced = ("logger=", "trainer.max_epochs", "trainer.limit_", "model.prune.total_steps")
    short = [o for o in SHORT if not o.startswith(replaced)]
    assert train_cli("--config", DEMO, f"run.root={tmp_path}", *short, "logger=none", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
                     "model.prune.total_steps=4", "model.prune.uniform=true", "run.test=false") == 0
    folder = only_run_dir(tmp_path, "loraprune") / "export" / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert "auto_map" not in config and not list(folder.glob("*.py"))
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["intermediate_size"]) == (2, 4, 128)
    clean = _generate_without_tenfold(folder, tmp_path, remote=False)
    assert clean["class"] == "LlamaForCausalLM" and clean["module"].startswith("transformers.")
    assert clean["tokens"] == _project_tokens(load_hf(folder))


def test_uniform_pruning_refuses_protected_layers(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "--validate-only", "logger=none",
                      "model.prune.uniform=true", "model.prune.protect_last_layer=true")
    assert "model.prune.uniform=true" in line and "protect_last_layer" in line


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
