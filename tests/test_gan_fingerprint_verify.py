"""gan_fingerprint: the paper's image-to-image setting on a procedural task (4x4 -> 8x8 digit super-resolution),
end to end: image-input fingerprints, iBD embedding, registration, and the verifier's job through train.py
(`method: gan_fingerprint_verify`) with TorchScript suspects; its bad inputs, each one `error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from conftest import error_line, only_run_dir, train_cli
from datamodules.gan_fingerprint import digit_tensors
from lightning_modules.gan_fingerprint import commitment, fingerprints, verification
from lightning_modules.gan_fingerprint.classifier import DigitClassifier, accuracy, train_classifier
from lightning_modules.gan_fingerprint.hook import GeneratorHook, InputKind
from lightning_modules.gan_fingerprint.i2i import low_resolution, train_super_resolver

N = 40  # fingerprints (the smallest N at p0 ~ 0.1, alpha = 1e-6 is 6; 40 leaves a usable threshold)


def _program(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    """A suspect as a user would hand it over: a torch.export program with a dynamic batch (.pt2)."""
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return str(path)


def _script(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    """... or as TorchScript."""
    torch.jit.save(torch.jit.trace(module.eval(), example), str(path))
    return str(path)


@pytest.fixture(scope="module")
def i2i(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The owner's side: G (super-resolution, seed 0), references (seeds 1-3), C0; N image fingerprints embedded
    into C* by the iBDv1 loss; the evidence folder a gan_fingerprint export would hold. Held-out independents:
    seeds 7 and 8."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("i2i")
    train_x, train_y = digit_tensors(0)["train"]
    test_x, test_y = digit_tensors(0)["test"]
    g, *refs, ind, ind2 = (train_super_resolver(train_x, seed, iterations=120) for seed in (0, 1, 2, 3, 7, 8))
    c0 = train_classifier(train_x, train_y, seed=100, epochs=6, width=16, lr=3e-3)
    task_inputs = low_resolution(digit_tensors(0)["val"][0])  # the owner's natural task inputs (held out)
    x, y = fingerprints.i2i_fingerprints(g, c0, "i2i-key", task_inputs, N, 10)
    with torch.no_grad():
        fp, ref_images = g(x), torch.cat([ref(x) for ref in refs])
        fixed = fingerprints.EmbeddingBatch(fp, y, c0(fp).argmax(1), ref_images, c0(ref_images).argmax(1))
    c = DigitClassifier(10, 16, 64)
    c.load_state_dict(c0.state_dict())
    opt = torch.optim.Adam(c.parameters(), 1e-3)
    rng = torch.Generator().manual_seed(0)
    g_hash = commitment.weights_hash(g)
    for _ in range(250):
        i = torch.randint(len(train_x), (64,), generator=rng)
        terms = fingerprints.embedding_loss(
            c, train_x[i], train_y[i], fixed, fingerprints.LossWeights(), fingerprints.AugmentSettings(), rng, v2=False
        )
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    c.eval()
    # The evidence folder, laid out as a gan_fingerprint export: C* (model.pt + export_meta.yaml), X, Y, registration.
    evidence = folder / "export"
    evidence.mkdir()
    torch.save(c.state_dict(), evidence / "model.pt")
    spec = {
        "target": "lightning_modules.gan_fingerprint.classifier:build_classifier",
        "kwargs": {"num_classes": 10, "width": 16, "embed_dim": 64, "fine_classes": 0},
    }
    (evidence / "export_meta.yaml").write_text(yaml.safe_dump({"method": "gan_fingerprint", "net": spec}))
    torch.save({"x": x, "y": y}, evidence / "fingerprints.pt")
    lodged = commitment.commit(x, y, c, g, nonce="n", timestamp="2026-01-01T00:00:00Z")
    record = commitment.registration_record(lodged, x, y, 10, (1, 8, 8), InputKind.image.value, "ibd_v1")
    (evidence / "registration.json").write_text(json.dumps(record))
    example = x[:2]
    suspects = {
        "protected": _program(g, example, folder / "protected.pt2"),
        "independent": _script(ind, example, folder / "independent_s7.ts"),
        "independent2": _program(ind2, example, folder / "independent_s8.pt2"),
    }
    return {
        "g": g,
        "c0": c0,
        "c": c,
        "x": x,
        "y": y,
        "g_hash": g_hash,
        "folder": folder,
        "evidence": evidence,
        "suspects": suspects,
        "test": (test_x, test_y),
    }


def test_image_fingerprints_are_triggered_natural_inputs(i2i: dict) -> None:
    x = i2i["x"]
    assert x.shape == (N, 1, 4, 4)
    inputs = low_resolution(digit_tensors(0)["val"][0])
    nearest = torch.cdist(x.flatten(1), inputs.flatten(1), p=float("inf")).min(1).values
    assert (nearest <= 8 / 255 + 1e-6).all()  # each x_i is a natural input plus the imperceptible trigger
    with torch.no_grad():
        natural = i2i["c0"](i2i["g"](x)).argmax(1)
    assert (i2i["y"] != natural).all()
    x2, y2 = fingerprints.i2i_fingerprints(i2i["g"], i2i["c0"], "i2i-key", inputs, N, 10)
    assert torch.equal(x, x2) and torch.equal(i2i["y"], y2)  # a pure function of the key


def test_i2i_embedding_marks_c_and_leaves_g_bit_identical(i2i: dict) -> None:
    hook = GeneratorHook(i2i["g"], (1, 8, 8), InputKind.image, "protected")
    rate = verification.match_count(i2i["c"], hook(i2i["x"]), i2i["y"]) / N
    assert rate >= 0.9
    assert verification.match_count(i2i["c0"], hook(i2i["x"]), i2i["y"]) == 0  # the secret lives in C*
    assert commitment.weights_hash(i2i["g"]) == i2i["g_hash"]
    assert accuracy(i2i["c"], *i2i["test"]) >= accuracy(i2i["c0"], *i2i["test"]) - 0.05


def _verify(tmp_path: Path, *overrides: str) -> list[str]:
    return ["--config", "configs/gan_fingerprint_verify.yaml", f"run.root={tmp_path}", "logger=none", *overrides]


def test_verify_job_decides_each_suspect_and_logs_its_panels(i2i: dict, tmp_path: Path, in_repo: None) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suspects = f"data.suspects=[{i2i['suspects']['protected']},{i2i['suspects']['independent']}]"
    args = _verify(tmp_path, f"data.evidence={i2i['evidence']}", suspects, "model.p0=0.1", "logger=tensorboard")
    assert train_cli(*args) == 0
    run = only_run_dir(tmp_path, "gan_fingerprint_verify")
    report = json.loads((run / "verify.json").read_text())
    rows = {row["name"]: row for row in report["suspects"]}
    k = verification.binomial_threshold(N, 0.1, 1e-6)
    assert report["threshold_matches"] == k and report["tau"] == k / N
    assert rows["protected"]["derived"] and rows["protected"]["r"] >= 0.9 and rows["protected"]["p_value"] < 1e-6
    assert not rows["independent_s7"]["derived"] and rows["independent_s7"]["r"] < report["tau"]
    assert rows["independent_s7"]["p_value"] > 1e-6
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {"verify/r_by_suspect", "verify/answers/protected", "verify/answers/independent_s7"} <= set(
        events.Tags()["images"]
    )
    assert {"verify/tau", "verify/r/protected", "verify/p_value/independent_s7"} <= set(events.Tags()["scalars"])


def test_verify_job_estimates_p0_from_independents(i2i: dict, tmp_path: Path, in_repo: None) -> None:
    args = _verify(
        tmp_path,
        f"data.evidence={i2i['evidence']}",
        f"data.suspects=[{i2i['suspects']['protected']}]",
        f"data.independents=[{i2i['suspects']['independent']},{i2i['suspects']['independent2']}]",
    )
    assert train_cli(*args) == 0
    report = json.loads((only_run_dir(tmp_path, "gan_fingerprint_verify") / "verify.json").read_text())
    p0 = report["p0"]
    matches = round(sum(report["independents"].values()) * N)
    assert p0["used"] == pytest.approx(verification.estimate_p0(matches, 2 * N).high)
    assert report["suspects"][0]["derived"]


def _altered(i2i: dict, tmp_path: Path, case: str) -> Path:
    """A copy of the evidence with one label changed (tampered) or the registered class count changed."""
    evidence = tmp_path / case
    evidence.mkdir()
    for name in ("model.pt", "export_meta.yaml", "registration.json", "fingerprints.pt"):
        (evidence / name).write_bytes((i2i["evidence"] / name).read_bytes())
    if case == "tampered":
        y = i2i["y"].clone()
        y[0] = (y[0] + 1) % 10
        torch.save({"x": i2i["x"], "y": y}, evidence / "fingerprints.pt")
    else:
        record = json.loads((evidence / "registration.json").read_text())
        (evidence / "registration.json").write_text(json.dumps({**record, "num_classes": 5}))
    return evidence


class _Wide(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4)  # (1, 16, 16): another task


class _NaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2) * float("nan")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_evidence", "data.evidence is not set"),
        ("no_suspects", "data.suspects is empty"),
        ("tampered", "commitment mismatch"),
        ("class_count", "has 10 classes, the registration says 5"),
        ("shape", "outputs of shape (1, 16, 16), but the registration expects (1, 8, 8)"),
        ("nan", "outputs contain NaN or Inf"),
        ("not_a_model", "neither a tenfold export folder"),
        ("no_p0", "no p0: set model.p0"),
        ("p0_range", "p0=1.5 must lie strictly between 0 and 1"),
    ],
)
def test_verify_job_bad_inputs_one_line(
    case: str, expected: str, i2i: dict, tmp_path: Path, in_repo: None, capsys: pytest.CaptureFixture
) -> None:
    x = i2i["x"][:2]
    suspect = i2i["suspects"]["protected"]
    evidence = i2i["evidence"]
    extra = ["model.p0=0.1"]
    if case in ("tampered", "class_count"):
        evidence = _altered(i2i, tmp_path, case)
    elif case == "shape":
        suspect = _program(_Wide(), x, tmp_path / "wide.pt2")
    elif case == "nan":
        suspect = _program(_NaN(), x, tmp_path / "nan.pt2")
    elif case == "not_a_model":
        suspect = str(tmp_path / "notes.ts")
        Path(suspect).write_text("not a model")
    elif case == "no_p0":
        extra = []
    elif case == "p0_range":
        extra = ["model.p0=1.5"]
    args = [f"data.evidence={evidence}", f"data.suspects=[{suspect}]", *extra]
    if case == "no_evidence":
        args = args[1:]
    elif case == "no_suspects":
        args = [args[0], *extra]
    assert expected in error_line(capsys, *_verify(tmp_path, *args))
