"""W&B never prompts: offline without a key, online only with one; secrets never reach logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenfold.config import LoggerKind, WandbConfig
from tenfold.errors import ConfigError
from tenfold.loggers import build_loggers, redact_secrets, wandb_mode


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc


def test_offline_without_a_key(no_key: None) -> None:
    assert wandb_mode(WandbConfig()) == "offline"


def test_online_with_a_key(no_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(WandbConfig()) == "online"


def test_env_mode_and_explicit_mode_win(no_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(WandbConfig()) == "disabled"
    assert wandb_mode(WandbConfig(mode="offline")) == "offline"


def test_online_without_key_is_an_error_not_a_prompt(no_key: None) -> None:
    with pytest.raises(ConfigError, match="wandb login"):
        wandb_mode(WandbConfig(mode="online"))


def test_secrets_are_redacted() -> None:
    tree = {"endpoint": {"url": "http://x", "api_key": "sk-123"}, "items": [{"token": "t"}], "lr": 0.1}
    assert redact_secrets(tree) == {
        "endpoint": {"url": "http://x", "api_key": "<redacted>"}, "items": [{"token": "<redacted>"}], "lr": 0.1,
    }


def test_csv_is_always_kept(tmp_path: Path) -> None:
    kinds = [type(lg).__name__ for lg in build_loggers(LoggerKind.tensorboard, WandbConfig(), tmp_path, "r", "id",
                                                       [], None)]
    assert kinds == ["ResumableCSVLogger", "TensorBoardLogger"]
    assert build_loggers(LoggerKind.none, WandbConfig(), tmp_path, "r", "id", [], None) == []


def test_wandb_watch_logs_gradient_and_parameter_histograms(tmp_path, monkeypatch) -> None:
    from conftest import TINY, only_run_dir, train_cli

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    overrides = [o for o in TINY if not o.startswith("logger=")]
    assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", *overrides, "logger=wandb",
                     "wandb.watch=true", "trainer.log_every_n_steps=1", "export.enabled=false") == 0
    (log,) = only_run_dir(tmp_path).glob("wandb/offline-run-*/run-*.wandb")
    records = log.read_bytes()  # history rows are protobuf records: their keys appear verbatim
    assert b"gradients/net." in records and b"parameters/net." in records
