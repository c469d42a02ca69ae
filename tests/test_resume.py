"""A run killed mid-training and resumed from last.ckpt ends with the uninterrupted run's weights."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, train_subprocess
from tenfold.checkpoint_io import load_weights_only

RUN = [
    "--config", "configs/demo/rdnet.yaml", "logger=csv", "seed=7", "trainer.max_epochs=6",
    "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=1",
    "trainer.deterministic=true", "trainer.enable_progress_bar=false", "data.batch_size_per_device=16",
    "run.test=false", "export.enabled=false",
    # Drop path and random crops exercise the restored RNG streams; EMA the restored callback state.
    "model.drop_path_rate=0.1", "ema.enabled=true", "ema.decay=0.9",
]


def _step(ckpt: Path) -> int:
    try:
        return int(load_weights_only(ckpt)["global_step"])
    except Exception:  # noqa: BLE001 (not written yet)
        return -1


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    full = train_subprocess(*RUN, f"run.root={tmp_path}", "run.name=full")
    assert full.returncode == 0, full.stderr[-2000:]

    env = {k: v for k, v in os.environ.items() if k != "TENFOLD_RUN_DIR"}
    proc = subprocess.Popen([sys.executable, "train.py", *RUN, f"run.root={tmp_path}", "run.name=killed"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "rdnet" / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while _step(last) < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _step(last)
    assert 8 <= killed_at < 24

    resumed = train_subprocess(*RUN, f"run.root={tmp_path}", "run.name=killed", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_weights_only(tmp_path / "rdnet" / "full" / "checkpoints" / "last.ckpt")
    b = load_weights_only(last)
    assert a["global_step"] == b["global_step"] == 24
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    lr_a = a["optimizer_states"][0]["param_groups"][0]["lr"]
    assert b["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(lr_a)
    # The metrics logged before the kill are still there: the resumed run appended to metrics.csv.
    with open(tmp_path / "rdnet" / "killed" / "metrics.csv") as fh:
        val_epochs = {int(row["epoch"]) for row in csv.DictReader(fh) if row.get("val/loss")}
    assert val_epochs == set(range(6))
    # ... and holds the uninterrupted run's rows, none twice.
    assert _rows(tmp_path / "rdnet" / "killed" / "metrics.csv") == _rows(tmp_path / "rdnet" / "full" / "metrics.csv")


def _rows(metrics_csv: Path) -> list[tuple]:
    """Each metrics.csv row as (epoch, step, the columns it fills): what a duplicate would repeat."""
    with open(metrics_csv) as fh:
        return [(r["epoch"], r["step"], tuple(sorted(k for k, v in r.items() if v and k not in ("epoch", "step"))))
                for r in csv.DictReader(fh)]


@pytest.mark.usefixtures("in_repo")
def test_resume_after_a_crash_leaves_no_duplicated_metrics_rows(tmp_path: Path) -> None:
    """Rows the dead run flushed after its last checkpoint are dropped at resume, then logged once again;
    the rows logged at the checkpoint's own step (the epoch's train/loss, after the save) are kept."""
    from conftest import TINY, train_cli

    args = ["--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", "run.name=r",
            *[o for o in TINY if not o.startswith("logger=")], "logger=csv", "run.test=false",
            "export.enabled=false", "trainer.log_every_n_steps=1"]
    assert train_cli(*args, "trainer.max_epochs=1") == 0
    metrics = tmp_path / "rdnet" / "r" / "metrics.csv"
    lines = metrics.read_text().splitlines()
    # What a run killed in epoch 1 after a flush leaves: epoch 1's first rows, past the checkpoint (step 2).
    with open(metrics) as fh:
        first_epoch = [row for row in csv.DictReader(fh) if row["epoch"] == "0" and row["train/loss_step"]]
    with open(metrics, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=lines[0].split(","))
        writer.writerows({**row, "epoch": "1", "step": str(int(row["step"]) + 2)} for row in first_epoch)
    assert train_cli(*args, "trainer.max_epochs=2", "resume=auto") == 0
    rows = _rows(metrics)
    assert len(rows) == len(set(rows)), rows
    assert [r[0] for r in rows if "val/loss" in r[2]] == ["0", "1"]
    assert [r[0] for r in rows if "train/loss" in r[2]] == ["0", "1"]


def test_existing_run_dir_is_not_overwritten(tmp_path: Path) -> None:
    last = tmp_path / "rdnet" / "taken" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    proc = train_subprocess(*RUN, f"run.root={tmp_path}", "run.name=taken", timeout=120)
    assert proc.returncode == 2 and "resume=auto" in proc.stderr


def _process_group(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_stops_every_ddp_rank_and_the_run_resumes(tmp_path: Path) -> None:
    """SIGTERM to the launcher (what a scheduler sends) ends both gloo ranks promptly; resume=auto finishes."""
    ddp = [*RUN, f"run.root={tmp_path}", "run.name=term", "trainer.strategy=ddp", "trainer.devices=2",
           "trainer.accelerator=cpu", "trainer.deterministic=false", "trainer.max_epochs=40"]
    env = {k: v for k, v in os.environ.items() if k != "TENFOLD_RUN_DIR"}
    proc = subprocess.Popen([sys.executable, "train.py", *ddp], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    last = tmp_path / "rdnet" / "term" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while _step(last) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # The rank-1 process is the launcher's child, in the same process group: wait for it too.
    stop_by = time.monotonic() + 60
    while (still_running := _process_group(proc.pid)) and time.monotonic() < stop_by:
        time.sleep(0.5)
    if still_running:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not still_running, f"ranks still running 60 s after SIGTERM: {still_running}"
    stopped_at = _step(last)  # last.ckpt is written at epoch ends: 4 optimizer steps per epoch
    assert stopped_at >= 4 and stopped_at % 4 == 0

    one_more_epoch = f"trainer.max_epochs={stopped_at // 4 + 1}"
    resumed = train_subprocess(*ddp[:-1], one_more_epoch, "resume=auto", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _step(last) == stopped_at + 4
