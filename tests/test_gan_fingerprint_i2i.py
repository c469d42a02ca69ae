"""gan_fingerprint in the paper's setting: `configs/gan_fingerprint.yaml` on an image-to-image task folder (the
procedural 4x4 -> 8x8 digit super-resolution task with its .pt2 generators), through train.py: the owner's
population from files, image fingerprints, embedding, verification of attacked copies, export; then the
verifier's job on that export. Bad inputs of the task folder and the generator files, one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import error_line, only_run_dir, train_cli
from lightning_modules.gan_fingerprint import commitment
from lightning_modules.gan_fingerprint.generator_files import load_generator
from lightning_modules.gan_fingerprint.i2i_task import TaskFiles, write_task
from tenfold.export import load_export

PAPER = "configs/gan_fingerprint.yaml"
N = 40
# A short run: fewer epochs, a small C0, one attack of each kind.
SHORT = [
    "trainer.max_epochs=12",
    "data.population.classifier_width=32",
    "data.population.classifier_epochs=15",
    f"model.num_fingerprints={N}",
    "model.attack.prune=[0.3]",
    "model.attack.finetune_seeds=[11]",
    "model.attack.finetune_iterations=30",
    "model.attack.noise=[0.1]",
    "model.attack.blur=[]",
    "model.attack.jpeg=[75]",
    "model.attack.quantise=[]",
    "model.attack.fid_samples=200",
    "model.embed.surrogate_prune=[0.3]",
    "model.embed.surrogate_finetune_iterations=20",
]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> TaskFiles:
    return write_task(tmp_path_factory.mktemp("sr_task"))


def _train(task: TaskFiles, root: Path, *extra: str) -> list[str]:
    return ["--config", PAPER, *task.overrides(), f"run.root={root}", f"data.cache_dir={root / 'cache'}", *extra]


@pytest.fixture(scope="module")
def owner_run(task: TaskFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENFOLD_FINGERPRINT_KEY", "owner-secret")
        mp.setenv("WANDB_MODE", "offline")
        mp.chdir(Path(__file__).resolve().parents[1])
        assert train_cli(*_train(task, root, *SHORT, "logger=wandb")) == 0
    return only_run_dir(root, "gan_fingerprint")


def test_task_folder_and_generator_files(task: TaskFiles) -> None:
    assert len(list((task.root / "target" / "train").rglob("*.png"))) == 1257
    assert len(list((task.root / "input" / "test").rglob("*.png"))) == 270
    with Image.open(next((task.root / "input" / "train" / "0").iterdir())) as image:
        assert image.size == (4, 4) and image.mode == "L"
    g = load_generator(task.protected, "g", allow_torchscript=False)
    assert g(torch.zeros(5, 1, 4, 4)).shape == (5, 1, 8, 8)  # the batch dimension is dynamic
    assert len(task.references) == 8 and len(task.independents) == 4


def test_owner_run_embeds_verifies_attacks_and_registers_image_fingerprints(owner_run: Path, task: TaskFiles) -> None:
    report = json.loads((owner_run / "verification.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    references = {f"reference_s{s}" for s in (1, 2, 3, 8, 9, 10, 11, 12)}
    independents = {"independent_s4", "independent_s5", "independent_s6", "independent_w8_s7"}
    assert set(rows) == {"protected", "prune_30", "finetune_s11", "noise_0.1", "jpeg_75", *references, *independents}
    m = report["metrics"]
    assert m["g_hash_unchanged"] == 1.0 and m["r_c0_on_fingerprints"] <= 0.1  # the secret lives in C*
    assert rows["protected"]["r"] >= 0.9 and rows["protected"]["verified"]
    assert m["false_positives"] == 0 and m["max_r_independent"] < m["tau"]
    assert np.isfinite(rows["finetune_s11"]["fid"]) and np.isfinite(rows["protected"]["fid"])
    export = owner_run / "export"
    registration = json.loads((export / "registration.json").read_text())
    assert registration["input"] == "image" and registration["output_shape"] == [1, 8, 8]
    assert registration["num_classes"] == 10 and registration["design"] == "ibd_v2"
    fp = torch.load(export / "fingerprints.pt", weights_only=True)
    assert fp["x"].shape == (N, 1, 4, 4) and fp["x"].min() >= -1 and fp["x"].max() <= 1
    # The registration binds the owner's generator file: its hash is the one of the .pt2 program.
    assert registration["generator_hash"] == commitment.weights_hash(load_generator(task.protected, "g"))
    c_star, meta = load_export(export)
    assert meta["net"]["kwargs"]["in_channels"] == 1
    with torch.no_grad():
        hits = (c_star(load_generator(task.protected, "g")(fp["x"])).argmax(1) == fp["y"]).float().mean()
    assert float(hits) == pytest.approx(rows["protected"]["r"])


def test_owner_run_dashboard_shows_the_exported_fingerprint_samples(owner_run: Path) -> None:
    (media,) = owner_run.glob("wandb/offline-run-*/files/media")
    (grid,) = media.glob("images/fingerprints/*.png")
    shown = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    exported = np.asarray(Image.open(owner_run / "export" / "fingerprint_samples.png").convert("RGB")).astype(int)
    assert shown.shape == exported.shape and np.abs(shown - exported).max() <= 1 and len(np.unique(shown)) > 8
    (table,) = media.glob("table/test/suspects*.table.json")
    names = {row[0] for row in json.loads(table.read_text())["data"]}
    assert {"protected", "independent_s4", "prune_30"} <= names


def test_verifier_decides_on_the_owner_export(owner_run: Path, task: TaskFiles, tmp_path: Path, in_repo: None) -> None:
    owner = {row["name"]: row["r"] for row in json.loads((owner_run / "verification.json").read_text())["rows"]}
    args = [
        "--config", "configs/gan_fingerprint_verify.yaml", f"run.root={tmp_path}", "logger=none",
        f"data.evidence={owner_run / 'export'}", f"data.suspects=[{task.protected},{task.independents[0]}]",
    ]
    assert train_cli(*args) == 0
    report = json.loads((only_run_dir(tmp_path, "gan_fingerprint_verify") / "verify.json").read_text())
    rows = {row["name"]: row for row in report["suspects"]}
    assert rows["protected"]["r"] == pytest.approx(owner["protected"]) and rows["protected"]["derived"]
    assert rows["independent_s4"]["r"] == pytest.approx(owner["independent_s4"])
    assert not rows["independent_s4"]["derived"]


# ---- bad inputs


def _broken_task(task: TaskFiles, tmp_path: Path, case: str) -> list[str]:
    """Overrides pointing the paper config at a task altered in one way."""
    overrides = task.overrides()
    if case in ("no_split", "mixed_sizes", "corrupt"):
        root = tmp_path / "task"
        shutil.copytree(task.root / "target", root / "target")
        shutil.copytree(task.root / "input", root / "input")
        if case == "no_split":
            shutil.rmtree(root / "input" / "test")
        elif case == "mixed_sizes":
            Image.new("L", (5, 5)).save(root / "target" / "val" / "3" / "odd.png")
        else:
            (root / "target" / "train" / "1" / "broken.png").write_bytes(b"not a png")
        overrides[0] = f"data.root={root}"
    elif case == "no_root":
        overrides[0] = f"data.root={tmp_path / 'nowhere'}"
    elif case == "no_references":
        overrides[2] = "data.reference_generators=[]"
    elif case == "missing_file":
        overrides[1] = f"data.protected_generator={tmp_path / 'G.pt2'}"
    elif case == "same_file_twice":
        overrides[3] = f"data.independent_generators=[{task.references[0]}]"
    elif case == "same_weights":
        copy = tmp_path / "copy_of_reference.pt2"
        shutil.copy(task.references[0], copy)
        overrides[3] = f"data.independent_generators=[{copy}]"
    elif case == "torchscript":
        script = tmp_path / "G.ts"
        script.write_bytes(b"x")
        overrides[1] = f"data.protected_generator={script}"
    elif case == "wrong_task":
        from torch import nn

        class Wide(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.interpolate(x, scale_factor=4.0)

        path = tmp_path / "wide.pt2"
        torch.export.save(torch.export.export(Wide(), (torch.zeros(2, 1, 4, 4),)), str(path))
        overrides[1] = f"data.protected_generator={path}"
    elif case == "ae_design":
        overrides.append("model.design=ae")
    return overrides


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_root", "data.source=i2i needs data.root"),
        ("no_split", "input/test is missing"),
        ("no_references", "needs data.reference_generators=[...]"),
        ("missing_file", "G.pt2 (data.*_generator*) does not exist"),
        ("same_file_twice", "given in more than one role"),
        ("same_weights", "holds the same weights as data.reference_generators[0]"),
        ("torchscript", "is not a .pt2 program"),
        ("wrong_task", "answers data.root/input images of shape (1, 4, 4) with images of shape (1, 16, 16)"),
        ("ae_design", "model.design=ae searches adversarial latent codes"),
        ("mixed_sizes", "images of several sizes"),
        ("corrupt", "cannot decode image file"),
    ],
)
def test_bad_i2i_inputs_one_line(
    case: str, expected: str, task: TaskFiles, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch, in_repo: None,
) -> None:
    monkeypatch.setenv("TENFOLD_FINGERPRINT_KEY", "k")
    overrides = _broken_task(task, tmp_path, case)
    args = ["--config", PAPER, *overrides, f"run.root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path}", "logger=none"]
    assert expected in error_line(capsys, *args)


@pytest.mark.slow
def test_paper_config_gates_on_the_example_task(task: TaskFiles, tmp_path: Path, in_repo: None, monkeypatch) -> None:
    """The paper config's defaults (iBDv2, N = 100, 25 epochs, C0 width 64) on the example task: the numbers in
    the method README. The 2-point clean-accuracy goal is not met here (3.7 points measured; README)."""
    monkeypatch.setenv("TENFOLD_FINGERPRINT_KEY", "k")
    assert train_cli(*_train(task, tmp_path, "logger=csv")) == 0
    report = json.loads((only_run_dir(tmp_path, "gan_fingerprint") / "verification.json").read_text())
    rows, m = {row["name"]: row for row in report["rows"]}, report["metrics"]
    assert rows["protected"]["r"] >= 0.95 and rows["protected"]["verified"] and rows["prune_30"]["verified"]
    assert all(rows[f"finetune_s{s}"]["verified"] for s in (11, 12, 13))
    assert m["max_r_independent"] <= 0.25 and m["false_positives"] == 0 and m["auc"] >= 0.95
    assert m["g_hash_unchanged"] == 1.0 and m["acc_drop"] <= 0.05


@pytest.mark.slow
@pytest.mark.distributed
def test_i2i_under_ddp_shards_suspects_into_one_report(task: TaskFiles, tmp_path: Path) -> None:
    """strategy=ddp, 2 CPU processes: each rank reads the task and the generator files, derives the same
    fingerprint set (asserted in setup), verifies its share of the suspects; one run dir, one full report."""
    import csv

    from conftest import train_subprocess

    proc = train_subprocess(
        *_train(task, tmp_path, *SHORT, "logger=csv"), "trainer.strategy=ddp", "trainer.devices=2",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "export.onnx=false",
        env={"TENFOLD_FINGERPRINT_KEY": "k"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path, "gan_fingerprint")
    report = json.loads((run / "verification.json").read_text())
    assert len(report["rows"]) == 17 and all(np.isfinite(row["r"]) for row in report["rows"])
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(1 for row in rows if row.get("test/r/protected")) == 1  # logged once, not per rank
    assert (run / "export" / "registration.json").is_file()
