"""The demo config, unchanged, reaches the issue's bar on the digits test split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import only_run_dir, train_cli


@pytest.mark.slow
def test_demo_rdnet_reaches_95_percent_top1(tmp_path: Path) -> None:
    assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", "logger=csv",
                     "trainer.enable_progress_bar=false", "export.onnx=false") == 0
    with open(only_run_dir(tmp_path) / "metrics.csv") as fh:
        top1 = [float(row["test/top1"]) for row in csv.DictReader(fh) if row.get("test/top1")]
    assert top1 and top1[-1] >= 0.95
