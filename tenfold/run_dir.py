"""Run directories: `runs/<method>/<run_name>/` with config, metadata, checkpoints, logs, export.

Lightning's `ddp` launcher re-runs the entry point once per local rank, so the run directory is chosen
once, in the launching process, and handed to the children through `TENFOLD_RUN_DIR`. Under torchrun
or SLURM every rank starts on its own, so the default name comes from the job id, which all ranks share.
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tenfold.config import config_hash, to_plain
from tenfold.errors import ConfigError

RUN_DIR_ENV = "TENFOLD_RUN_DIR"
LAST_CKPT = "checkpoints/last.ckpt"
PACKAGES = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "wandb", "omegaconf")


@dataclass(frozen=True)
class RunDir:
    path: Path
    resume_from: Path | None  # last.ckpt to continue from, if any
    wandb_id: str

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def export(self) -> Path:
        return self.path / "export"


def default_run_name(cfg: Any) -> str:
    """`job<id>` on a cluster (identical on every rank, and across requeues even if the YAML was
    edited meanwhile), else `<timestamp>-<config hash>`."""
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "")
    if job and job != "none":
        return f"job{job}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "this is a multi-process launch without a job id: set run.name=<name> so that every "
            "rank writes to the same run directory"
        )
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{config_hash(cfg)}"


def _latest_run(method_root: Path) -> Path:
    candidates = sorted(method_root.glob(f"*/{LAST_CKPT}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(
            f"resume=latest: no run with a {LAST_CKPT} under {method_root}; "
            "start a new run (drop resume=) or pass resume=<run dir>"
        )
    return candidates[-1].parents[1]


def resolve_run_dir(cfg: Any) -> RunDir:
    """Choose (and remember for child ranks) the run directory; decide what to resume from."""
    method_root = Path(cfg.run.root) / cfg.method
    resume, ckpt_path = getattr(cfg, "resume", None), getattr(cfg, "ckpt_path", None)  # jobs have neither
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        path = Path(inherited)
    elif resume == "latest":
        path = _latest_run(method_root)
    elif resume not in (None, "auto"):
        path = Path(resume)
        if not (path / LAST_CKPT).is_file():
            raise ConfigError(f"resume={resume}: {path / LAST_CKPT} does not exist; pass a run directory")
    else:
        path = method_root / (cfg.run.name or default_run_name(cfg))
    os.environ[RUN_DIR_ENV] = str(path)

    last = path / LAST_CKPT
    resume_from = None
    if ckpt_path:
        resume_from = Path(ckpt_path)
        if not resume_from.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    elif resume is not None and last.is_file():
        resume_from = newest_checkpoint(path)
    elif last.is_file() and not inherited:
        raise ConfigError(
            f"run directory {path} already holds {LAST_CKPT}: pass resume=auto to continue it, "
            "or choose another run.name"
        )
    return RunDir(path=path, resume_from=resume_from, wandb_id=_wandb_id(path))


def newest_checkpoint(path: Path) -> Path:
    """last.ckpt, or Lightning's SLURM requeue checkpoint (`hpc_ckpt_<n>.ckpt`) if that is newer."""
    candidates = [path / LAST_CKPT, *path.glob("hpc_ckpt_*.ckpt")]
    return max((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime)


def _wandb_id(path: Path) -> str:
    """The run's W&B id: reused from meta.yaml so a resume or requeue continues the same W&B run."""
    meta = path / "meta.yaml"
    if meta.is_file():
        stored = OmegaConf.load(meta).get("wandb_id")
        if stored:
            return str(stored)
    # Child ranks of a fresh run never talk to W&B, so their id does not matter.
    return secrets.token_hex(4)


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_run_files(run: RunDir, cfg: Any, world_size: int) -> None:
    """config.yaml (resolved) and meta.yaml; call on global rank 0 only.

    A resumed run keeps the original meta.yaml and appends this start to its `resumes` list.
    """
    run.path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(to_plain(cfg)), run.path / "config.yaml")
    start = {
        "git_sha": _git_sha(),
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": world_size,
        "versions": _versions(),
    }
    meta_path = run.path / "meta.yaml"
    if run.resume_from is not None and meta_path.is_file():
        meta = OmegaConf.to_container(OmegaConf.load(meta_path))
        meta["resumes"] = [*meta.get("resumes", []), {**start, "from": str(run.resume_from)}]
    else:
        meta = {"method": cfg.method, "wandb_id": run.wandb_id, **start}
    OmegaConf.save(OmegaConf.create(meta), meta_path)
