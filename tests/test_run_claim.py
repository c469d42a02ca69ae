"""Run directories never collide: a run claims its directory with a lock; a live owner is named, a dead one's
lock is taken over, and a default name started in the same second gets its own directory."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, error_line
from tenfold.cli import load_config
from tenfold.errors import ConfigError
from tenfold.run_dir import LOCK, RUN_DIR_ENV, RunDir, claim, release, resolve_run_dir


def _cfg(tmp_path: Path, *overrides: str):
    return load_config([str(REPO / "configs/demo/rdnet.yaml")], [f"run.root={tmp_path}", *overrides])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock(path: Path, pid: int, host: str | None = None, job: str = "") -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / LOCK).write_text(f"pid={pid}\nhost={host or platform.node()}\njob={job}\nstarted=then\n")


def test_a_live_owner_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "rdnet" / "r", owner.pid)
        with pytest.raises(ConfigError, match=f"in use by pid {owner.pid} on host {platform.node()}"):
            resolve_run_dir(_cfg(tmp_path, "run.name=r", "resume=auto"))
    finally:
        owner.kill()
        owner.wait()
    assert (tmp_path / "rdnet" / "r" / LOCK).read_text().startswith(f"pid={owner.pid}\n")  # not touched


def test_another_hosts_lock_is_respected(tmp_path: Path) -> None:
    _lock(tmp_path / "rdnet" / "r", 1, host="elsewhere")
    with pytest.raises(ConfigError, match=f"on host elsewhere .*delete {tmp_path / 'rdnet' / 'r' / LOCK}"):
        resolve_run_dir(_cfg(tmp_path, "run.name=r", "resume=auto"))


def test_a_dead_owners_lock_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _lock(tmp_path / "rdnet" / "r", _dead_pid())
    run = resolve_run_dir(_cfg(tmp_path, "run.name=r", "resume=auto"))
    assert run.owned and (run.path / LOCK).read_text().startswith(f"pid={os.getpid()}\n")
    release(run)
    assert not run.path.exists()  # nothing was written: the claim leaves nothing behind

    # A requeued cluster job (same job id) takes over its own lock from another host.
    monkeypatch.delenv(RUN_DIR_ENV)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    _lock(tmp_path / "rdnet" / "job77", 4242, host="node-that-died", job="77")
    assert resolve_run_dir(_cfg(tmp_path, "resume=auto", "run.name=job77")).owned


def test_default_names_in_the_same_second_get_their_own_directory(tmp_path: Path) -> None:
    first = claim(tmp_path / "20260101-000000-abcdef", fresh=True)
    second = claim(tmp_path / "20260101-000000-abcdef", fresh=True)
    assert (first.name, second.name) == ("20260101-000000-abcdef", "20260101-000000-abcdef-2")
    assert (first / LOCK).is_file() and (second / LOCK).is_file()


def test_only_rank_zero_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("RANK", "1")
    run = resolve_run_dir(_cfg(tmp_path))
    assert not run.owned and not (run.path / LOCK).exists()


def test_a_finished_run_is_not_reused_without_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "rdnet" / "done").mkdir(parents=True)
    (tmp_path / "rdnet" / "done" / "config.yaml").write_text("method: rdnet\n")
    line = error_line(capsys, "--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", "run.name=done", *TINY)
    assert "already holds a run (config.yaml): pass resume=auto" in line
    assert not (tmp_path / "rdnet" / "done" / LOCK).exists()


def test_release_keeps_a_lock_it_does_not_own(tmp_path: Path) -> None:
    _lock(tmp_path / "r", 1)
    release(RunDir(tmp_path / "r", None, "", owned=True))
    assert (tmp_path / "r" / LOCK).is_file()


@pytest.mark.usefixtures("in_repo")
def test_a_second_live_run_with_the_same_name_fails_at_once(tmp_path: Path) -> None:
    """Two concurrent runs named alike: the second stops in seconds naming the first; the first ends intact."""
    from conftest import train_cli

    args = [
        "--config",
        "configs/demo/rdnet.yaml",
        f"run.root={tmp_path}",
        "run.name=same",
        *[o for o in TINY if not o.startswith("logger=")],
        "logger=csv",
        "export.enabled=false",
        "run.test=false",
    ]
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    first = subprocess.Popen(
        [sys.executable, "train.py", *args, "trainer.max_epochs=2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "rdnet" / "same" / LOCK
    deadline = time.monotonic() + 300
    while not lock.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert lock.is_file(), "the first run never claimed its directory"
        started = time.monotonic()
        assert train_cli(*args) == 2
        assert time.monotonic() - started < 30
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, err[-2000:]
    run = tmp_path / "rdnet" / "same"
    assert (run / "checkpoints" / "last.ckpt").is_file() and not lock.exists()
    epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert sorted({e for e in epochs if e}) == ["0", "1"]  # the first run's metrics only
