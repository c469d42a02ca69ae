"""Run directories: `runs/<method>/<run_name>/` with config, metadata, checkpoints, logs, export.

Lightning's `ddp` launcher re-runs the entry point once per local rank, so the run directory is chosen
once, in the launching process, and handed to the children through `TENFOLD_RUN_DIR`. Under torchrun
or SLURM every rank starts on its own, so the default name comes from the job id, which all ranks share.

The launching process (global rank 0) claims the directory before any work: it creates `.lock` there
exclusively, holding its pid, host and job id. A second live run asking for the same directory is refused
and told who owns it; a lock whose process is gone (same host, dead pid; or the same cluster job, requeued)
is taken over. The owner removes the lock when the run ends, and the directory too if nothing was written.
"""

from __future__ import annotations

import errno
import os
import platform
import secrets
import shutil
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
from tenfold.redact import redact_command, redact_secrets

RUN_DIR_ENV = "TENFOLD_RUN_DIR"
LAST_CKPT = "checkpoints/last.ckpt"
LOCK = ".lock"
PACKAGES = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "wandb", "omegaconf")


@dataclass(frozen=True)
class RunDir:
    path: Path
    resume_from: Path | None  # last.ckpt to continue from, if any
    wandb_id: str
    owned: bool = False  # this process claimed the directory (holds its lock)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def export(self) -> Path:
        return self.path / "export"


def default_run_name(cfg: Any) -> str:
    """`job<id>` on a cluster (identical on every rank, and across requeues even if the YAML was
    edited meanwhile), else `<timestamp>-<config hash>`."""
    job = _job_id()
    if job:
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
    if resume == "auto" and not cfg.run.name and not inherited:
        raise ConfigError("resume=auto continues the run named by run.name: set run.name=<name> "
                          "(or resume=latest for the newest run)")
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
    owned = not inherited and _is_launcher()
    if owned:
        # A default (timestamp) name is never shared: a run started in the same second gets a suffix.
        path = claim(path, fresh=not (inherited or resume or cfg.run.name or _job_id()))
    os.environ[RUN_DIR_ENV] = str(path)

    last = path / LAST_CKPT
    resume_from = None
    if ckpt_path:
        resume_from = Path(ckpt_path)
        if not resume_from.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    elif resume is not None and last.is_file():
        resume_from = newest_checkpoint(path)
    # config.yaml only counts for the claiming rank: under torchrun a late rank may start after rank 0 wrote it.
    elif not inherited and (last.is_file() or (owned and (path / "config.yaml").is_file())):
        release(RunDir(path, None, "", owned))
        held = LAST_CKPT if last.is_file() else "config.yaml"
        raise ConfigError(
            f"run directory {path} already holds a run ({held}): pass resume=auto to continue it, "
            "or choose another run.name"
        )
    return RunDir(path=path, resume_from=resume_from, wandb_id=_wandb_id(path), owned=owned)


def _job_id() -> str:
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "")
    return "" if job == "none" else job


def _is_launcher() -> bool:
    """Global rank 0 (or a single process): the one process of a job that claims the run directory."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID"))


def _owner(lock: Path) -> dict[str, str]:
    try:
        fields = dict(line.split("=", 1) for line in lock.read_text().splitlines() if "=" in line)
    except OSError:
        return {}
    return fields


def _alive(owner: dict[str, str]) -> bool:
    """Whether the process that wrote a lock may still be running (unknowable on another host)."""
    if owner.get("job") and owner.get("job") == _job_id():
        return False  # the same cluster job, requeued: its previous incarnation is gone
    if owner.get("host") != platform.node():
        return True
    try:
        pid = int(owner.get("pid", ""))
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # an earlier run of this very process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(path: Path, fresh: bool = False) -> Path:
    """Create and lock the run directory (exclusively); return it. `fresh`: never reuse a directory,
    add a suffix instead (default names)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            base, n = path, 1
            while True:
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    n += 1
                    path = base.with_name(f"{base.name}-{n}")
        else:
            path.mkdir(exist_ok=True)
        _take_lock(path / LOCK)
    except ConfigError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ConfigError(f"no space left on device: {exc.filename or path}") from None
        raise ConfigError(f"cannot create the run directory {path} under run.root: "
                          f"{exc.strerror or exc} ({exc.filename or path})") from None
    _remove_orphans(path)
    return path


def _take_lock(lock: Path) -> None:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record = f"pid={os.getpid()}\nhost={platform.node()}\njob={_job_id()}\nstarted={started}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if _alive(owner):
                raise ConfigError(
                    f"run directory {lock.parent} is in use by pid {owner.get('pid', '?')} on host "
                    f"{owner.get('host', '?')} (since {owner.get('started', '?')}): choose another run.name, or wait "
                    f"for that run to end (if it is dead, delete {lock})"
                ) from None
            stale = lock.with_name(f"{LOCK}.stale-{os.getpid()}")
            try:
                os.replace(lock, stale)  # only one of two racing takers moves it
                stale.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(record)
        return
    raise ConfigError(f"cannot take the lock {lock}: another run keeps claiming it")


def _remove_orphans(path: Path) -> None:
    """Temp files of writes a kill interrupted (`.last.ckpt.tmp-<pid>`, `.hf.tmp-*`): nobody else writes here."""
    freed, count = 0, 0
    for folder in (path / "checkpoints", path / "export", path):
        if not folder.is_dir():
            continue
        for item in folder.glob(".*"):
            if ".tmp-" not in item.name and ".old-" not in item.name:
                continue
            if item.is_dir():
                freed += sum(f.stat().st_size for f in item.rglob("*") if f.is_file())
                shutil.rmtree(item, ignore_errors=True)
            else:
                freed += item.stat().st_size
                item.unlink(missing_ok=True)
            count += 1
    if count:
        print(f"removed {count} temp file(s) of an interrupted run ({freed / 1e6:.1f} MB) from {path}",
              file=sys.stderr)


def release(run: RunDir) -> None:
    """End of a run (owner only): drop the lock, and the directory if the run wrote nothing into it."""
    if not run.owned:
        return
    lock = run.path / LOCK
    if _owner(lock).get("pid") == str(os.getpid()):
        lock.unlink(missing_ok=True)
    try:
        run.path.rmdir()  # only if empty
        run.path.parent.rmdir()
    except OSError:
        pass


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
    OmegaConf.save(OmegaConf.create(redact_secrets(to_plain(cfg))), run.path / "config.yaml")
    start = {
        "git_sha": _git_sha(),
        "command": " ".join(redact_command(sys.argv)),
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
