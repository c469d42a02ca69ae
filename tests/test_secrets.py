"""Secrets never reach disk or W&B: redacted by key name everywhere, and only by the names that are secrets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import train_subprocess
from tenfold.redact import is_secret_name, redact_command, redact_secrets

SECRETS = [
    "api_key",
    "apiKey",
    "OPENAI_API_KEY",
    "hf_token",
    "token",
    "access_token",
    "client_secret",
    "db_password",
    "auth",
    "credentials",
    "secret_key",
    "private_key",
    "Authorization",
]
NOT_SECRETS = [
    "max_new_tokens",
    "tokenizer",
    "pad_token_id",
    "eos_token_id",
    "keep_ratio",
    "monitor_key",
    "key_env",
    "key",
    "sort_key",
    "tokens",
    "author",
    "completion_length",
    "token_budget",
    "num_tokens",
]


@pytest.mark.parametrize("name", SECRETS)
def test_secret_names_are_redacted(name: str) -> None:
    assert is_secret_name(name)
    assert redact_secrets({"a": {name: "sk-1"}}) == {"a": {name: "<redacted>"}}


@pytest.mark.parametrize("name", NOT_SECRETS)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)
    assert redact_secrets({"a": [{name: 32}]}) == {"a": [{name: 32}]}


def test_everything_under_a_secret_key_and_the_command_line() -> None:
    assert redact_secrets({"auth": {"user": "u", "scopes": ["a"]}, "lr": 0.1}) == {
        "auth": {"user": "<redacted>", "scopes": ["<redacted>"]},
        "lr": 0.1,
    }
    argv = ["train.py", "--config", "x.yaml", "model.llm.api_key=sk-1", "data.files.hf_token=[t]", "seed=3"]
    assert redact_command(argv) == [
        "train.py",
        "--config",
        "x.yaml",
        "model.llm.api_key=<redacted>",
        "data.files.hf_token=<redacted>",
        "seed=3",
    ]


PLANTED = ("sk-live-PLANTED-1", "hf_PLANTED_2")


def _files(root: Path):
    """Every file of a run directory; checkpoints and other zip files opened, member by member."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        yield path, path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    yield Path(f"{path}!{member}"), archive.read(member)


@pytest.mark.usefixtures("in_repo")
def test_planted_secrets_reach_no_file_of_the_run_and_no_wandb_record(tmp_path: Path) -> None:
    """A secret on the command line (under a dict-typed field) and one from the environment via
    ${oc.env:...}: nothing in config.yaml, meta.yaml, checkpoints, export (HF config.json) or W&B holds them."""
    proc = train_subprocess(
        "--config",
        "configs/demo/loraprune_lm.yaml",
        f"run.root={tmp_path}",
        "run.name=s",
        "logger=wandb",
        f"data.files.api_key=[{PLANTED[0]}]",
        "data.files.hf_token=['${oc.env:TENFOLD_TEST_HF_TOKEN}']",
        "model.dense_warmup_steps=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.grammar_sentences={train: 300, validation: 60, test: 60}",
        "model.prune.total_steps=2",
        "model.prune.every_n_steps=1",
        timeout=600,
        env={"WANDB_MODE": "offline", "TENFOLD_TEST_HF_TOKEN": PLANTED[1], "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "loraprune" / "s"
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {
        "config.yaml",
        "meta.yaml",
        "checkpoints/last.ckpt",
        "export/export_meta.yaml",
        "export/hf/config.json",
    } <= names
    assert any(n.startswith("wandb/") and n.endswith(".wandb") for n in names), sorted(names)
    leaks = [str(path) for path, data in _files(run) for secret in PLANTED if secret.encode() in data]
    assert leaks == []
    assert "data.files.api_key=<redacted>" in (run / "meta.yaml").read_text()
