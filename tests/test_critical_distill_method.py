"""critical_distill end to end through train.py: the demo's run files and W&B panels, the four algorithms, the
score jobs, the bad inputs of the issue (one `error:` line, exit 2), and DDP == one process for DM and for the
score runs (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, error_line, only_run_dir, train_cli, train_subprocess
from lightning_modules.critical_distill import mtt
from lightning_modules.critical_distill.jobs import score_figure
from lightning_modules.critical_distill.selection import ScoreFile, dataset_fingerprint
from tenfold.checkpoint_io import load_weights_only
from tenfold.export import load_export

DEMO = "configs/demo/critical_distill.yaml"
SHORT = [
    "logger=none",
    "model.iterations=3",
    "model.eval_networks=2",
    "model.eval_epochs=3",
    "model.val_epochs=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


pytestmark = pytest.mark.usefixtures("in_repo")


def digits_labels() -> np.ndarray:
    from datamodules.critical_distill import load_real_data
    from lightning_modules.critical_distill.config import DistillDataConfig

    return load_real_data(DistillDataConfig()).train_y.numpy()


def test_demo_run_saves_selection_evaluation_and_synthetic_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with_wandb = [o for o in SHORT if o != "logger=none"]
    with_wandb += ["logger=wandb", "model.image_log_every=1", "trainer.log_every_n_steps=1"]
    assert train_cli("--config", DEMO, f"run.root={tmp_path}", "run.name=a", *with_wandb) == 0
    run = tmp_path / "critical_distill" / "a"
    selection = json.loads((run / "selection.json").read_text())
    assert selection["per_class_kept"] == [13] * 10 and len(selection["kept_indices"]) == 130
    labels = digits_labels()
    # keep the easiest 10 %: every kept sample's LossInit is at most every dropped one's, class by class
    scores = np.array(
        json.loads((REPO / "lightning_modules/critical_distill/resources/digits_LossInit.json").read_text())["scores"]
    )
    kept = np.zeros(len(labels), bool)
    kept[selection["kept_indices"]] = True
    for c in range(10):
        assert scores[kept & (labels == c)].max() <= scores[~kept & (labels == c)].min()
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert len(evaluation["accuracies"]) == 2 and evaluation["mean"] == pytest.approx(np.mean(evaluation["accuracies"]))
    synthetic, meta = load_export(run / "export")
    assert synthetic.images.shape == (10, 1, 8, 8) and synthetic.labels.tolist() == list(range(10))
    assert meta["subset_hash"] == selection["subset_hash"] and meta["input_size"] == [1, 8, 8]
    check_dashboard(run, synthetic, selection)
    # the same seed gives the same selection and the same synthetic images
    assert train_cli("--config", DEMO, f"run.root={tmp_path}", "run.name=b", *SHORT) == 0
    again = tmp_path / "critical_distill" / "b"
    assert json.loads((again / "selection.json").read_text())["kept_indices"] == selection["kept_indices"]
    assert torch.equal(
        load_weights_only(again / "export/model.pt")["images"], load_weights_only(run / "export/model.pt")["images"]
    )


def check_dashboard(run: Path, synthetic, selection: dict) -> None:
    """What reaches W&B: a synthetic-image grid per iteration (the last one is the exported set, to 1 grey level)
    and the kept-fraction curve; the scalar panels in the run's metrics."""
    import csv

    from PIL import Image

    from datamodules.critical_distill import CriticalDistillDataModule
    from lightning_modules.critical_distill.module import kept_fraction_figure
    from tenfold.cli import load_config
    from tenfold.media import image_grid

    (media,) = run.glob("wandb/offline-run-*/files/media/images")
    grids = sorted(media.glob("distill/synthetic_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    assert len(grids) == 3  # model.iterations=3, model.image_log_every=1: one grid per image update
    pixels = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in grids]
    assert all(len(np.unique(p)) > 16 for p in pixels)  # not black, not constant
    assert np.abs(pixels[0] - pixels[-1]).max() > 0  # the images move between iterations
    cfg = load_config([str(run / "config.yaml")], [])
    data = CriticalDistillDataModule(cfg.data)
    data.setup("fit")
    mean, std = torch.tensor(data.data.mean).view(1, -1, 1, 1), torch.tensor(data.data.std).view(1, -1, 1, 1)
    images = (synthetic.images.detach() * std + mean).clamp(0, 1)
    expected = np.asarray(image_grid(list(images), [str(c) for c in range(10)], nrow=10)).astype(int)
    assert pixels[-1].shape == expected.shape and np.abs(pixels[-1] - expected).max() <= 1
    (curve,) = media.glob("selection/kept_fraction_curve_*.png")
    drawn = np.asarray(Image.open(curve).convert("RGB")).astype(int)
    assert selection["per_class_kept"] == data.selection.per_class_kept and len(np.unique(drawn)) > 8
    assert np.abs(drawn - np.asarray(kept_fraction_figure(data.selection, data.data.class_names))).max() <= 1
    with open(run / "metrics.csv") as fh:
        logged = {key for row in csv.DictReader(fh) for key, value in row.items() if value}
    assert {"train/loss", "val/acc", "val/loss", "test/acc_mean", "test/acc_std"} <= logged


@pytest.mark.parametrize("algorithm", ["dc", "dsa", "mtt"])
def test_other_algorithms_run(algorithm: str, tmp_path: Path) -> None:
    extra = [
        "model.mtt.num_experts=2",
        "model.mtt.train_epochs=3",
        "model.mtt.syn_steps=3",
        "model.mtt.max_start_epoch=1",
        "model.mtt.expert_epochs=2",
        "model.lr_img=100",
    ]
    extra = extra if algorithm == "mtt" else []
    assert (
        train_cli(
            "--config",
            DEMO,
            f"run.root={tmp_path}",
            f"model.algorithm={algorithm}",
            "model.lr_img=0.1",
            "data.batch_size_per_device=16",
            *SHORT,
            *extra,
        )
        == 0
    )
    run = only_run_dir(tmp_path, "critical_distill")
    before = None
    if algorithm == "mtt":
        buffer = torch.load(run / "mtt_buffer.pt", weights_only=True)
        assert buffer["trajectories"].shape[:2] == (2, 4)
        assert buffer["meta"]["subset_hash"] == json.loads((run / "selection.json").read_text())["subset_hash"]
        before = buffer
    state = load_weights_only(run / "export/model.pt")
    assert torch.isfinite(state["images"]).all()
    assert ("syn_lr" in state) == (before is not None)


def test_scores_job_and_importer(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "mc.json"
    assert (
        train_cli(
            "--config",
            "configs/critical_distill_scores.yaml",
            f"run.root={tmp_path}",
            "logger=wandb",
            "model.indicator=MonteCarlo",
            "model.runs=3",
            "model.epochs=1",
            "model.net_width=8",
            f"model.output={out}",
            "trainer.enable_progress_bar=false",
        )
        == 0
    )
    saved = json.loads(out.read_text())
    assert saved["indicator"] == "MonteCarlo" and saved["n"] == 1257 and saved["runs"] == 3
    media = only_run_dir(tmp_path, "critical_scores") / "wandb"
    (figure,) = media.glob("offline-run-*/files/media/images/scores/per_class_*.png")
    drawn = np.asarray(Image.open(figure).convert("RGB")).astype(int)
    assert len(np.unique(drawn)) > 8  # the per-class score box plot, as redrawn from the saved scores
    redrawn = score_figure(np.array(saved["scores"]), digits_labels(), [str(c) for c in range(10)], "MonteCarlo")
    assert np.abs(drawn - np.asarray(redrawn).astype(int)).max() <= 1
    assert saved["fingerprint"] == dataset_fingerprint(digits_labels()) and saved["wall_time_s"] > 0
    released = tmp_path / "released.json"
    released.write_text(json.dumps(saved["scores"]))
    imported = tmp_path / "imported.json"
    assert (
        train_cli(
            "--config",
            "configs/critical_distill_import.yaml",
            f"run.root={tmp_path}",
            "logger=none",
            "data.source=digits",
            f"model.released={released}",
            "model.indicator=MonteCarlo",
            f"model.output={imported}",
        )
        == 0
    )
    assert json.loads(imported.read_text())["scores"] == saved["scores"]
    line = error_line(
        capsys,
        "--config",
        "configs/critical_distill_import.yaml",
        f"run.root={tmp_path}",
        "logger=none",
        "data.source=digits",
        f"model.released={released}",
        "model.expected_fingerprint=0123abcd",
    )
    assert "fingerprint" in line and "not the expected 0123abcd" in line
    scores_job = ["--config", "configs/critical_distill_scores.yaml", f"run.root={tmp_path}", "logger=none"]
    assert "model.runs=0: at least one run" in error_line(capsys, *scores_job, "model.runs=0")
    line = error_line(capsys, *scores_job, "model.indicator=MonteCarlo", "model.subset_fraction=0")
    assert "model.subset_fraction=0.0: a fraction in (0, 1]" in line


@pytest.mark.parametrize(
    "config", sorted(p.name for p in (REPO / "configs").glob("critical_distill*.yaml") if "scores" not in p.name)
)
def test_paper_configs_name_the_missing_data(config: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    released = "model.released=lightning_modules/critical_distill/resources/CIFAR10_LossInit.json.gz"
    extra = [released] if "import" in config else []  # read (gzipped, as shipped) before the data is loaded
    line = error_line(capsys, "--config", f"configs/{config}", f"run.root={tmp_path}", "logger=none", *extra)
    assert "data.root" in line and "cifar-10-batches-py" in line


def _scores(tmp_path: Path, values: np.ndarray, labels: np.ndarray | None = None) -> str:
    labels = digits_labels() if labels is None else labels
    raw = ScoreFile("LossInit", np.zeros(len(labels)), dataset_fingerprint(labels)).to_json()
    raw["scores"] = [float(v) for v in values]  # written by hand: the loader must catch what is wrong
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(raw))  # json writes NaN for nan
    return str(path)


def test_bad_inputs_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--config", DEMO, f"run.root={tmp_path}", *SHORT]
    n = len(digits_labels())
    short = _scores(tmp_path, np.zeros(n - 1))
    assert "1256 scores for a training set of 1257" in error_line(capsys, *base, f"data.selection.scores={short}")
    bad = np.zeros(n)
    bad[5] = np.nan
    line = error_line(capsys, *base, f"data.selection.scores={_scores(tmp_path, bad)}")
    assert "NaN or inf (first at index 5)" in line
    bad[5], bad[9] = 0.0, -np.inf
    line = error_line(capsys, *base, f"data.selection.scores={_scores(tmp_path, bad)}")
    assert "1 score(s) are NaN or inf (first at index 9)" in line
    line = error_line(capsys, *base, "data.selection.criterion=Loss_large")
    assert "data.selection.criterion" in line and "LossInit_large" in line
    assert "keep_ratio=1.5: a ratio must lie in [0, 1]" in error_line(capsys, *base, "data.selection.keep_ratio=1.5")
    line = error_line(capsys, *base, "data.selection.keep_ratio=null", "data.selection.drop_ratio=-0.1")
    assert "drop_ratio=-0.1: a ratio must lie in [0, 1]" in line
    assert "exactly one of drop_ratio and keep_ratio" in error_line(capsys, *base, "data.selection.drop_ratio=0.5")
    line = error_line(capsys, *base, "data.selection.keep_ratio=0")
    assert "keeps 0 of the" in line and "lower drop_ratio" in line
    line = error_line(capsys, *base, "data.selection.keep_ratio=0.015", "model.ipc=3")
    assert "keeps 2 real image(s)" in line and "model.ipc=3" in line
    line = error_line(capsys, *base, "data.digits_split_seed=1")  # another order of the data: the fingerprint
    assert "computed on another dataset or order" in line
    line = error_line(capsys, *base, "model.algorithm=dc", "model.ipc=7")
    assert "model.ipc=7 has no DC loop setting" in line
    buffer = mtt.save_buffer(tmp_path / "other.pt", torch.zeros(1, 3, 5), {"subset_hash": "0000"})
    line = error_line(capsys, *base, "model.algorithm=mtt", f"model.mtt.buffer={buffer}")
    assert "trained on another real subset" in line
    line = error_line(capsys, "--config", "configs/critical_distill.yaml", f"run.root={tmp_path}", "logger=none")
    assert "data.root" in line and "cifar-10-batches-py" in line


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_dm_equals_one_process(tmp_path: Path) -> None:
    """DM with classes split over 2 gloo processes gives the one-process synthetic set and evaluation."""
    common = [
        "--config",
        DEMO,
        f"run.root={tmp_path}",
        "model.iterations=6",
        "model.eval_networks=4",
        "model.eval_epochs=5",
        "model.val_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "threads=1",
    ]
    one = train_subprocess(*common, "run.name=one", "trainer.devices=1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = train_subprocess(*common, "run.name=two", "trainer.devices=2", "trainer.strategy=ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "critical_distill"
    assert OmegaConf.load(runs / "two" / "meta.yaml").world_size == 2
    a = load_weights_only(runs / "one" / "export/model.pt")["images"]
    b = load_weights_only(runs / "two" / "export/model.pt")["images"]
    assert torch.equal(a, b)
    ev1, ev2 = (json.loads((runs / r / "evaluation.json").read_text()) for r in ("one", "two"))
    assert ev1["accuracies"] == ev2["accuracies"]


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_mtt_experts_and_steps_equal_one_process(tmp_path: Path) -> None:
    """MTT over 2 gloo processes: the experts split between them (3 experts: one process pads its second round)
    and gathered give the one-process buffer; the synthetic set and the evaluation follow exactly."""
    common = [
        "--config",
        DEMO,
        f"run.root={tmp_path}",
        "model.algorithm=mtt",
        "model.iterations=3",
        "model.lr_img=100",
        "model.mtt.num_experts=3",
        "model.mtt.train_epochs=3",
        "model.mtt.syn_steps=3",
        "model.mtt.max_start_epoch=1",
        "model.mtt.expert_epochs=2",
        "model.eval_networks=2",
        "model.eval_epochs=2",
        "model.val_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.accelerator=cpu",
        "threads=1",
    ]
    assert train_cli(*common, "run.name=one", "trainer.devices=1") == 0  # in this process, also 1 thread
    two = train_subprocess(*common, "run.name=two", "trainer.devices=2", "trainer.strategy=ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    runs = tmp_path / "critical_distill"
    a, b = (torch.load(runs / r / "mtt_buffer.pt", weights_only=True) for r in ("one", "two"))
    assert a["trajectories"].shape == (3, 4, a["trajectories"].shape[-1])
    assert torch.equal(a["trajectories"], b["trajectories"]) and a["meta"]["subset_hash"] == b["meta"]["subset_hash"]
    assert not torch.equal(a["trajectories"][0], a["trajectories"][2])  # distinct experts, none left as padding
    one, two = (load_weights_only(runs / r / "export/model.pt") for r in ("one", "two"))
    assert torch.equal(one["images"], two["images"]) and torch.equal(one["syn_lr"], two["syn_lr"])
    ev1, ev2 = (json.loads((runs / r / "evaluation.json").read_text()) for r in ("one", "two"))
    assert ev1["accuracies"] == ev2["accuracies"]


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_scores_equal_one_process(tmp_path: Path) -> None:
    """The score runs split over 2 gloo processes (3 runs: one process pads its second round) give the
    one-process scores exactly (that one in this process, also 1 thread)."""
    common = [
        "--config",
        "configs/critical_distill_scores.yaml",
        f"run.root={tmp_path}",
        "logger=csv",
        "model.indicator=MonteCarlo",
        "model.runs=3",
        "model.epochs=1",
        "model.net_width=8",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "threads=1",
    ]
    assert train_cli(*common, "run.name=one", "trainer.devices=1", f"model.output={tmp_path}/one.json") == 0
    two = train_subprocess(
        *common, "run.name=two", "trainer.devices=2", "trainer.strategy=ddp", f"model.output={tmp_path}/two.json"
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert OmegaConf.load(tmp_path / "critical_scores" / "two" / "meta.yaml").world_size == 2
    a, b = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert a["scores"] == b["scores"] and a["runs"] == b["runs"] == 3 and a["fingerprint"] == b["fingerprint"]
    assert "2 process(es)" in b["source"] and len(set(a["scores"])) > 3


@pytest.mark.slow  # importing HF datasets and building its cache: tens of seconds here
def test_hf_source_loads_a_local_folder_in_its_order(image_folder: Path) -> None:
    from datamodules.critical_distill import load_real_data
    from lightning_modules.critical_distill.config import DistillDataConfig, DistillSource

    data = load_real_data(
        DistillDataConfig(source=DistillSource.hf, hf_name="imagefolder", root=str(image_folder), image_column="image")
    )
    assert data.train_x.shape == (12, 3, 24, 24) and data.class_names == ["bars", "dots", "plain"]
    assert sorted(data.train_y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4 and data.test_x.shape[0] == 12
    assert data.fingerprint == dataset_fingerprint(data.train_y.numpy())
