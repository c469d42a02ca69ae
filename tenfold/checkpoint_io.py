"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

Lightning's default writer stages the file in the system temp dir and moves it, which is a copy (not an
atomic rename) when /tmp is another filesystem; a run killed mid-save could leave a truncated
`last.ckpt`. Here the temp file sits beside the target and `os.replace` swaps it in.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tenfold.errors import CheckpointError

# Below this much free space after a failed write, the failure was the disk filling up (torch.save then
# raises a RuntimeError about stream positions, not ENOSPC).
FULL_DISK_BYTES = 16 << 20


def atomic_write(path: str | Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`: readers see the old or the new file.

    A full disk is one clear error; the previous file at `path` is kept and the temp file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, path.parent):
            kept = f"; the previous {path.name} is kept" if path.is_file() else ""
            raise CheckpointError(f"no space left on device: {path}{kept}. Free space and resume") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def load_weights_only(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """`torch.load` with `weights_only=True`, turning every failure into one clear error.

    `mmap=True` maps tensors lazily: a cheap way to validate a large checkpoint before a run.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 (zip, pickle and EOF errors all mean "unreadable")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is truncated, corrupt or not a weights-only torch "
            f"file ({first}). Delete it or point ckpt_path= at an earlier checkpoint"
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_weights_only(path, map_location or "cpu")
