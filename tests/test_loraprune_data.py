"""The causal-LM DataModule: local text files through HF `datasets`, the token cache, fixed windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.causal_lm import CausalLMDataConfig, CausalLMDataModule
from tenfold.errors import DataError


def _files(tmp_path: Path) -> dict[str, list[str]]:
    files = {}
    for split, n in (("train", 40), ("validation", 12), ("test", 9)):
        path = tmp_path / f"{split}.txt"
        path.write_text("\n".join(f"line {i} of the {split} split." for i in range(n)))
        files[split] = [str(path)]
    return files


def test_local_text_files_are_tokenised_once_and_cut_into_windows(tmp_path: Path) -> None:
    cfg = CausalLMDataConfig(source="text", files=_files(tmp_path), context_length=32, eval_context_length=16,
                             batch_size_per_device=4, cache_dir=str(tmp_path / "cache"))
    data = CausalLMDataModule(cfg)
    data.check()
    data.prepare_data()
    cached = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 3
    stamps = [p.stat().st_mtime_ns for p in cached]
    data.setup("fit")
    data.setup("test")
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # read from the cache, not tokenised again
    # byte-level: the test split is its lines joined with blank lines, in non-overlapping 16-token windows
    text = "\n\n".join(f"line {i} of the test split." for i in range(9))
    assert len(data.test_set) == len(text.encode()) // 16
    input_ids, labels = next(iter(data.train_dataloader()))
    assert input_ids.shape == (4, 32) and (input_ids == labels).all()
    assert data.tokenizer.decode(data.test_set[0][0].tolist()) == text[:16]


def test_missing_files_fail_with_the_key_to_set(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with pytest.raises(DataError, match="data.files.validation"):
        CausalLMDataModule(CausalLMDataConfig(source="json", files={"train": files["train"]})).check()
    files["test"] = [str(tmp_path / "absent.txt")]
    with pytest.raises(DataError, match="file not found: .*absent.txt"):
        CausalLMDataModule(CausalLMDataConfig(source="text", files=files)).check()
    with pytest.raises(DataError, match="set data.source"):
        CausalLMDataModule(CausalLMDataConfig()).check()
