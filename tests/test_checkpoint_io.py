"""Checkpoints are swapped in atomically and read without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tenfold.checkpoint_io import AtomicCheckpointIO, atomic_write, load_weights_only
from tenfold.errors import CheckpointError


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)

    def crash_midway(tmp: Path) -> None:
        tmp.write_bytes(b"PK partial")
        raise KeyboardInterrupt  # the run is killed while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash_midway)
    assert load_weights_only(target) == {"step": 1}
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"payload": Path("/etc/passwd")}, path)  # an arbitrary class, not plain data
    with pytest.raises(CheckpointError, match="not a weights-only torch file"):
        load_weights_only(path)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.ckpt"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_weights_only(path)
