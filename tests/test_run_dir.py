"""Run directories: one per job whatever the launcher, and resume finds the newest checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tenfold.cli import load_config
from tenfold.errors import ConfigError
from tenfold.run_dir import RUN_DIR_ENV, resolve_run_dir, write_run_files

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, *overrides: str):
    return load_config([str(REPO / "configs/demo/rdnet.yaml")], [f"run.root={tmp_path}", *overrides])


def test_child_ranks_inherit_the_launchers_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve_run_dir(_cfg(tmp_path))
    assert os.environ[RUN_DIR_ENV] == str(first.path)
    time.sleep(1.1)  # a rank computing its own timestamp name would now differ
    assert resolve_run_dir(_cfg(tmp_path)).path == first.path


def test_cluster_job_id_names_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert resolve_run_dir(_cfg(tmp_path)).path == tmp_path / "rdnet" / "job4242"


def test_multi_process_launch_without_job_id_needs_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="run.name"):
        resolve_run_dir(_cfg(tmp_path))


def test_resume_latest_and_newest_requeue_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("old", "new"):
        ckpt = tmp_path / "rdnet" / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        time.sleep(0.05)
    run = resolve_run_dir(_cfg(tmp_path, "resume=latest"))
    assert run.path == tmp_path / "rdnet" / "new" and run.resume_from.name == "last.ckpt"

    monkeypatch.delenv(RUN_DIR_ENV)
    (run.path / "hpc_ckpt_1.ckpt").write_bytes(b"y")  # Lightning's SLURM requeue save, newer
    assert resolve_run_dir(_cfg(tmp_path, "resume=latest")).resume_from.name == "hpc_ckpt_1.ckpt"


def test_resume_without_checkpoints_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run with a checkpoints/last.ckpt"):
        resolve_run_dir(_cfg(tmp_path, "resume=latest"))


def test_resumed_run_keeps_its_meta_and_wandb_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, "run.name=r")
    first = resolve_run_dir(cfg)
    write_run_files(first, cfg, world_size=1)
    (first.checkpoints).mkdir()
    (first.checkpoints / "last.ckpt").write_bytes(b"x")
    monkeypatch.delenv(RUN_DIR_ENV)
    again = resolve_run_dir(_cfg(tmp_path, "run.name=r", "resume=auto"))
    write_run_files(again, cfg, world_size=2)
    meta = OmegaConf.load(first.path / "meta.yaml")
    assert again.wandb_id == first.wandb_id == meta.wandb_id
    assert meta.world_size == 1 and meta.resumes[0].world_size == 2
