"""MPVR through train.py: the jobs, the paper config's required keys, CoOp data with the released banks,
bad input as one line, and (slow) the demo's gates and DDP-exact counts."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_mpvr_classifier import TINY_CLIP

from conftest import error_line, train_cli, train_subprocess

PAPER = "configs/mpvr.yaml"
DEMO = "configs/demo/mpvr.yaml"
EUROSAT = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
           "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]


pytestmark = pytest.mark.usefixtures("in_repo")




def tiny_model_overrides() -> list[str]:
    v, t = TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"]
    return ["model.arch=custom", "model.weights=none", f"model.custom.embed_dim={TINY_CLIP['embed_dim']}",
            *[f"model.custom.vision_cfg.{k}={x}" for k, x in v.items()],
            *[f"model.custom.text_cfg.{k}={x}" for k, x in t.items()]]


@pytest.fixture(scope="module")
def coop_eurosat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CoOp-layout EuroSAT stand-in: split_zhou_EuroSAT.json + 2750/<class>/<image>, 2 images per class."""
    root = tmp_path_factory.mktemp("eurosat")
    rng = np.random.default_rng(0)
    test = []
    for label, name in enumerate(EUROSAT):
        folder = root / "2750" / name.replace(" ", "")
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
            test.append([f"{folder.name}/{i}.jpg", label, name])
    (root / "split_zhou_EuroSAT.json").write_text(json.dumps({"train": [], "val": [], "test": test}))
    return root


# ---- the jobs (loopback stub LLM)


def test_stage_jobs_write_queries_and_banks_and_rerun_with_zero_calls(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-4242")  # sent to the stub, written nowhere
    common = [f"run.root={tmp_path}", "logger=csv", "llm.serve_stub=true", "llm.model=stub",
              f"llm.cache_dir={tmp_path / 'cache'}", "queries.num_queries=5"]
    assert train_cli("--config", "configs/mpvr_queries.yaml", "run.name=q", *common) == 0
    queries = json.loads((tmp_path / "mpvr_queries" / "q" / "queries.json").read_text())
    assert len(queries["queries"]) == 5 and queries["shortfall"] == 0
    out = tmp_path / "bank.json"
    args = ["--config", "configs/mpvr_descriptions.yaml", *common, "class_names=[plum,ice cube]",
            f"queries_file={tmp_path / 'mpvr_queries' / 'q' / 'queries.json'}", f"output={out}"]
    assert train_cli(*args, "run.name=d1") == 0
    bank = json.loads(out.read_text())
    assert list(bank) == ["plum", "ice cube"] and all(len(v) == 5 * 10 for v in bank.values())
    nested = json.loads((tmp_path / "mpvr_descriptions" / "d1" / "bank_nested.json").read_text())
    assert list(nested["plum"]) == queries["queries"]
    assert train_cli(*args, "run.name=d2", "llm.cache_only=true") == 0
    rows = list(csv.DictReader(open(tmp_path / "mpvr_descriptions" / "d2" / "metrics.csv")))
    assert float(rows[0]["llm/calls"]) == 0 and float(rows[0]["llm/cache_hits"]) == 10
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or b"sk-test-secret-4242" not in path.read_bytes(), path


# ---- the paper config: required keys, one line each


def test_paper_config_names_each_required_key(tmp_path: Path, coop_eurosat: Path, capsys) -> None:
    base = ["--config", PAPER, f"run.root={tmp_path}", "logger=none"]
    assert "data.root is not set: point it at the EuroSAT folder" in error_line(capsys, *base)
    line = error_line(capsys, *base, f"data.root={coop_eurosat}")
    assert "generate.llm.base_url is not set" in line
    line = error_line(capsys, *base, f"data.root={coop_eurosat}", "generate.llm.base_url=http://127.0.0.1:9/v1")
    assert "model.pretrained is not set: point it at a local ViT-B-32-quickgelu checkpoint" in line


def test_pretrained_tag_that_needs_a_download(tmp_path: Path, coop_eurosat: Path, capsys) -> None:
    line = error_line(capsys, "--config", PAPER, f"run.root={tmp_path}", "logger=none", f"data.root={coop_eurosat}",
                      "generate.llm.cache_only=true", "model.pretrained=openai")
    assert "model.pretrained='openai' is an open_clip tag whose weights are not cached" in line


def test_coop_eurosat_with_the_released_banks(tmp_path: Path, coop_eurosat: Path) -> None:
    """Test stage only (the paper's 0 train batches): released GPT + Mixtral banks, their ensemble, DS-TEMP."""
    banks = ("banks=[{name: s_temp, kind: templates, templates: s_temp}, {name: ds_temp, kind: templates, "
             "templates: eurosat}, {name: gpt_released, kind: file, path: gpt/EuroSAT.json}, "
             "{name: mixtral_released, kind: file, path: mixtral/EuroSAT.json}]")
    assert train_cli("--config", PAPER, f"run.root={tmp_path}", "run.name=r", "logger=csv",
                     f"data.root={coop_eurosat}", *tiny_model_overrides(), banks, "primary=gpt_mixtral",
                     "data.eval_batch_size_per_device=8", "data.image_size=32") == 0
    run = tmp_path / "mpvr" / "r"
    results = {r["bank"]: r for r in csv.DictReader(open(run / "mpvr" / "results.csv"))}
    assert set(results) == {"s_temp", "ds_temp", "gpt_released", "mixtral_released", "gpt_mixtral"}
    assert all(int(r["total"]) == 20 for r in results.values())
    stats = list(csv.DictReader(open(run / "mpvr" / "bank_statistics.csv")))
    gpt = [r for r in stats if r["bank"] == "gpt_released"]
    assert len(gpt) == 10 and {int(r["prompts"]) for r in gpt} == {340}
    assert {int(r["prompts"]) for r in stats if r["bank"] == "ds_temp"} == {3}
    assert (run / "export" / "model.pt").is_file()


@pytest.mark.parametrize("path, match", [
    ("gpt/Nope.json", "banks\\[0\\].path: prompt bank file not found: .*gpt/Nope.json"),
    ("gpt/CIFAR10_local.json", "banks\\[0\\] \\(gpt_released\\): 10 dataset class\\(es\\) missing from the bank"),
])
def test_bad_bank_through_the_cli(tmp_path: Path, coop_eurosat: Path, capsys, path: str, match: str) -> None:
    line = error_line(capsys, "--config", PAPER, f"run.root={tmp_path}", "logger=none", f"data.root={coop_eurosat}",
                      *tiny_model_overrides(), f"banks=[{{name: gpt_released, kind: file, path: {path}}}, "
                      "{name: mixtral_released, kind: templates, templates: s_temp}]", "primary=gpt_released")
    assert re.search(match, line), line


def test_unreadable_image_is_one_line(tmp_path: Path, coop_eurosat: Path, capsys) -> None:
    broken = tmp_path / "eurosat"
    shutil.copytree(coop_eurosat, broken)
    (broken / "2750" / "Forest" / "1.jpg").write_bytes(b"not a jpeg")
    line = error_line(capsys, "--config", PAPER, f"run.root={tmp_path}", "logger=none", f"data.root={broken}",
                      *tiny_model_overrides(), "banks=[{name: gpt_released, kind: templates, templates: s_temp}, "
                      "{name: mixtral_released, kind: templates, templates: eurosat}]", "primary=gpt_released",
                      "data.image_size=32")
    assert "cannot decode image file" in line and "Forest/1.jpg" in line


def test_unreachable_endpoint_in_the_evaluation(tmp_path: Path, capsys) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "logger=none", "trainer.fast_dev_run=true",
                      "generate.llm.serve_stub=false", "generate.llm.base_url=http://127.0.0.1:9/v1",
                      "generate.llm.max_retries=0", f"generate.llm.cache_dir={tmp_path / 'cache'}")
    assert "cannot reach llm.base_url=http://127.0.0.1:9/v1" in line


# ---- slow: the demo's gates and DDP-exact counts


def _results(run: Path) -> dict[str, dict]:
    return {r["bank"]: r for r in csv.DictReader(open(run / "mpvr" / "results.csv"))}


@pytest.mark.slow
def test_demo_zero_shot_gates(tmp_path: Path) -> None:
    """S-TEMP inside the chance band, MPVR >= chance + 40 points and above DS-TEMP (one seed; README: 3)."""
    from scipy.stats import binom

    assert train_cli("--config", DEMO, f"run.root={tmp_path}", "run.name=d", "logger=csv",
                     "trainer.enable_progress_bar=false", f"generate.llm.cache_dir={tmp_path / 'cache'}") == 0
    res = _results(tmp_path / "mpvr" / "d")
    n = int(res["mpvr"]["total"])
    lo, hi = binom.ppf(1e-3, n, 0.1) / n, binom.isf(1e-3, n, 0.1) / n
    assert lo <= float(res["s_temp"]["top1"]) <= hi
    assert float(res["mpvr"]["top1"]) >= 0.5 and float(res["mpvr"]["top1"]) > float(res["ds_temp"]["top1"])


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_counts_equal_one_process_without_padding(tmp_path: Path) -> None:
    """271 test images (odd: DistributedSampler would pad to 272): 2 processes count what 1 process counts."""
    common = ["--config", DEMO, "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
              "data.test_size=271", "data.batch_size_per_device=16", "data.eval_batch_size_per_device=40",
              f"generate.llm.cache_dir={tmp_path / 'cache'}", "export.enabled=false"]
    ddp = train_subprocess(*common, f"run.root={tmp_path}", "run.name=r", "trainer.strategy=ddp",
                           "trainer.devices=2", "trainer.accelerator=cpu")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run = tmp_path / "mpvr" / "r"
    # The same checkpoint evaluated by one process.
    import lightning as L

    from datamodules.mpvr import MPVRDataModule
    from lightning_modules.mpvr.module import MPVRModule

    module = MPVRModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path / "one")
    trainer.test(module, datamodule=MPVRDataModule(module.cfg.data), verbose=False)
    one = {r["bank"]: r for r in csv.DictReader(open(tmp_path / "one" / "mpvr" / "results.csv"))}
    two = _results(run)
    for bank in ("s_temp", "ds_temp", "mpvr"):
        assert int(two[bank]["total"]) == int(one[bank]["total"]) == 271
        assert int(two[bank]["correct"]) == int(one[bank]["correct"])


def test_hf_imagefolder_test_split(tmp_path: Path, image_folder: Path) -> None:
    """HF `imagefolder` layout: class names from the folders, every test image counted once."""
    assert train_cli("--config", PAPER, f"run.root={tmp_path}", "run.name=r", "logger=csv", "data.source=imagefolder",
                     f"data.root={image_folder}", *tiny_model_overrides(), "data.image_size=32",
                     "banks=[{name: s_temp, kind: templates, templates: s_temp}, "
                     "{name: gpt_released, kind: templates, templates: imagenet80}, "
                     "{name: mixtral_released, kind: templates, templates: dtd}]", "primary=gpt_mixtral") == 0
    results = _results(tmp_path / "mpvr" / "r")
    assert {int(r["total"]) for r in results.values()} == {12}
    per_class = list(csv.DictReader(open(tmp_path / "mpvr" / "r" / "mpvr" / "per_class_accuracy.csv")))
    assert [r["class"] for r in per_class[:3]] == ["bars", "dots", "plain"]
