"""Checkpoints are swapped in atomically and read without unpickling arbitrary objects; a full disk or a kill
leaves the previous checkpoint and no debris."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from tenfold.checkpoint_io import AtomicCheckpointIO, atomic_write, load_weights_only
from tenfold.errors import CheckpointError
from tenfold.run_dir import claim


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


def test_full_disk_is_one_error_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)

    def disk_fills(tmp: Path) -> None:  # a tiny full filesystem, simulated
        tmp.write_bytes(b"PK half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(CheckpointError, match=f"no space left on device: {target}; the previous last.ckpt is kept"):
        atomic_write(target, disk_fills)
    assert load_weights_only(target) == {"step": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_torch_save_on_a_full_disk_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as a RuntimeError about stream positions: free space tells."""
    target = tmp_path / "last.ckpt"

    def torch_fails(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 4096))
    with pytest.raises(CheckpointError, match="no space left on device"):
        atomic_write(target, torch_fails)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room left it is not a disk problem
        atomic_write(target, torch_fails)


def test_orphaned_temp_files_are_removed_when_the_run_restarts(tmp_path: Path) -> None:
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "export" / ".hf.tmp-x1y2").mkdir(parents=True)
    (run / "export" / ".hf.tmp-x1y2" / "model.safetensors").write_bytes(b"0" * 1000)
    (run / "checkpoints" / ".last.ckpt.tmp-4242").write_bytes(b"PK partial")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"kept")
    claim(run)
    assert sorted(p.name for p in run.rglob("*")) == [".lock", "checkpoints", "export", "last.ckpt"]


def test_a_run_hitting_a_full_disk_stops_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Through train.py: the second epoch's checkpoint write fails; the first epoch's last.ckpt is intact."""
    from conftest import REPO, TINY, error_line

    monkeypatch.chdir(REPO)
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.extend([f] if ".last.ckpt.tmp-" in str(f) else [])
        if len(saves) > 1:  # epoch 0's last.ckpt is written; then the disk is full
            Path(f).write_bytes(b"PK half")
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    line = error_line(capsys, "--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", "run.name=full", *TINY,
                      "trainer.max_epochs=2", "export.enabled=false")
    last = tmp_path / "rdnet" / "full" / "checkpoints" / "last.ckpt"
    assert line.startswith("error: no space left on device: ") and "the previous" in line
    monkeypatch.undo()
    assert load_weights_only(last)["epoch"] == 0
    assert not [p for p in last.parent.iterdir() if ".tmp-" in p.name]
