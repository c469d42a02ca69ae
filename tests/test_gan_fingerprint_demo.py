"""The demo's gates (slow). One demo run serves every test here: it trains the 8-generator population into
the session's cache (a DDP demo run in the same session, tests/test_ddp.py, reuses it, and so does this one
if that ran first), embeds, verifies 31 suspects, exports, and logs to TensorBoard. The numbers are read
from its verification.json, export and event files; the verifier's job is then run on its evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, only_run_dir, train_cli
from datamodules.gan_fingerprint import digit_tensors
from lightning_modules.gan_fingerprint import attacks, commitment
from lightning_modules.gan_fingerprint.population import build_population
from tenfold.checkpoint_io import load_weights_only
from tenfold.cli import load_config
from tenfold.export import load_export

DEMO = "configs/demo/gan_fingerprint.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, _cache_home: Path) -> Path:
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv("XDG_CACHE_HOME", str(_cache_home))
        args = ["--config", DEMO, f"run.root={root}", "logger=tensorboard", "export.onnx=false"]
        assert train_cli(*args, "trainer.enable_progress_bar=false") == 0
    return only_run_dir(root, "gan_fingerprint")


@pytest.mark.slow
def test_demo_gates(demo_run: Path) -> None:
    m = json.loads((demo_run / "verification.json").read_text())["metrics"]
    assert m["r/protected"] >= 0.95 and m["r/protected"] >= m["tau"]
    assert m["r/prune_30"] >= m["tau"]
    independents = {k: v for k, v in m.items() if k.startswith("r/independent")}
    assert len(independents) == 4 and max(independents.values()) <= 0.25
    assert m["false_positives"] == 0 and m["tau"] <= 0.35  # alpha = 1e-6, N = 100
    assert m["g_hash_unchanged"] == 1.0 and m["r_c0_on_fingerprints"] == 0.0
    # Issue #15: clean accuracy within 2 points after embedding (measured 1.11 = 3 of 270 test digits; the demo's
    # distillation term is what brings it under 2, see the method README).
    assert m["acc_drop"] <= 0.02


@pytest.mark.slow
def test_demo_registration_verifies_and_binds_the_export(demo_run: Path) -> None:
    export = demo_run / "export"
    model, _ = load_export(export)
    registration = json.loads((export / "registration.json").read_text())
    fp = load_weights_only(export / "fingerprints.pt")
    reg = commitment.Commitment(
        registration["digest"], registration["generator_hash"], registration["nonce"], registration["timestamp"]
    )
    commitment.check_commitment(reg, fp["x"], fp["y"], model)
    y = fp["y"].clone()
    y[0] = (y[0] + 1) % 10
    with pytest.raises(Exception, match="commitment mismatch"):
        commitment.check_commitment(reg, fp["x"], y, model)
    assert torch.equal(fp["y"], load_weights_only(demo_run / "checkpoints" / "best.ckpt")["state_dict"]["fp_y"])


@pytest.mark.slow
def test_dashboards_get_fingerprints_attack_curves_and_r_per_suspect(demo_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(demo_run / "tensorboard")).Reload()
    assert {"fingerprints/G(x_i)", "test/attack_curves"} <= set(events.Tags()["images"])
    scalars = set(events.Tags()["scalars"])
    assert {"test/tau", "test/r/protected", "test/r/independent_s4", "test/auc", "test/fid/prune_50"} <= scalars


@pytest.mark.slow
def test_verifier_job_on_the_demo_evidence(demo_run: Path, _cache_home: Path, tmp_path: Path, in_repo: None) -> None:
    """The verifier's job, given the demo's export and suspects as torch.export programs, decides as the owner's
    test stage measured: the same r for each suspect; protected and 30 %-pruned derived, independents not."""
    cfg = load_config([DEMO], [])
    population = build_population(
        cfg.data.population,
        digit_tensors(0)["train"],
        _cache_home / "tenfold" / "gan_fingerprint",
        train_missing=False,
    )
    members = {"protected": population.protected, "prune_30": attacks.magnitude_pruned(population.protected, 0.3)}
    members.update(population.independents)
    batch = torch.export.Dim("batch")
    paths = []
    for name, generator in members.items():
        program = torch.export.export(generator.eval(), (torch.zeros(4, 32),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp_path / f"{name}.pt2"))
        paths.append(str(tmp_path / f"{name}.pt2"))
    args = ["--config", "configs/gan_fingerprint_verify.yaml", f"run.root={tmp_path}", "logger=none"]
    assert train_cli(*args, f"data.evidence={demo_run / 'export'}", f"data.suspects=[{','.join(paths)}]") == 0
    report = json.loads((only_run_dir(tmp_path, "gan_fingerprint_verify") / "verify.json").read_text())
    owner = json.loads((demo_run / "verification.json").read_text())["metrics"]
    assert report["tau"] == pytest.approx(owner["tau"])  # p0 from the registration: the owner's estimate
    for row in report["suspects"]:
        assert row["r"] == pytest.approx(owner[f"r/{row['name']}"]), row["name"]
        assert row["derived"] == (row["name"] in ("protected", "prune_30")), row["name"]
