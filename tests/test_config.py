"""Config loading: every shipped config validates; typed schema errors name key, file and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tenfold.cli import load_config
from tenfold.config import LoggerKind, from_plain, to_plain
from tenfold.errors import ConfigError
from tenfold.redact import is_secret_name

REPO = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("path", ALL_CONFIGS)
def test_every_config_loads_and_validates(path: str) -> None:
    required = sorted(str(k) for k in OmegaConf.missing_keys(OmegaConf.load(path)))
    if required:  # paths the user must give (`???`): loading names every one of them
        with pytest.raises(ConfigError, match="required config value"):
            load_config([path], [])
        cfg = load_config([path], [f"{key}=/given/by/user" for key in required])
    else:
        cfg = load_config([path], [])
    assert cfg.method
    assert from_plain(type(cfg), to_plain(cfg)) == cfg  # round-trips through checkpoints' hparams
    redacted = {k for k in _leaf_keys(to_plain(cfg)) if is_secret_name(k)}
    assert redacted <= {"model.secret_key"}  # only real secrets are redacted (gan_fingerprint's key)


def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def test_paper_rdnet_config_holds_the_paper_recipe() -> None:
    cfg = load_config(["configs/rdnet.yaml"], [])
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1e-3, 0.05)
    assert (cfg.optim.warmup_epochs, cfg.optim.warmup_lr, cfg.optim.min_lr) == (20, 1e-4, 1e-6)
    assert cfg.trainer.max_epochs == 300
    assert cfg.data.batch_size_per_device * cfg.trainer.devices * cfg.trainer.accumulate_grad_batches == 512
    assert cfg.data.augment.auto_augment.startswith("rand-m9")
    assert (cfg.model.mixup.mixup_alpha, cfg.model.mixup.cutmix_alpha) == (0.8, 1.0)
    assert cfg.model.label_smoothing == 0.1 and cfg.data.augment.re_prob == 0.25


def test_later_files_and_overrides_win(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainer:\n  max_epochs: 7\nseed: 1\n")
    cfg = load_config(["configs/demo/rdnet.yaml", str(extra)], ["seed=3", "trainer.max_steps=5", "logger=csv"])
    assert (cfg.trainer.max_epochs, cfg.seed, cfg.trainer.max_steps) == (7, 3, 5)
    assert cfg.logger is LoggerKind.csv


def test_unknown_key_names_key_file_and_allowed_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rdnet\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(bad)], [])
    message = str(err.value)
    assert str(bad) in message and "trainer.max_epoch" in message
    assert "max_epochs (int or null)" in message  # the allowed keys, with types


def test_wrong_type_names_key_and_expected_type() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["configs/demo/rdnet.yaml"], ["trainer.max_epochs=ten"])
    message = str(err.value)
    assert "command line" in message and "trainer.max_epochs" in message and "int" in message


def test_enum_value_lists_choices() -> None:
    with pytest.raises(ConfigError, match="one of wandb, tensorboard, csv, none"):
        load_config(["configs/demo/rdnet.yaml"], ["logger=mlflow"])


def test_unknown_method_lists_known_methods() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'resnet'.*rdnet"):
        load_config(["configs/demo/rdnet.yaml"], ["method=resnet"])


def test_missing_method() -> None:
    with pytest.raises(ConfigError, match="no method selected"):
        load_config([], ["seed=1"])


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("method: rdnet\ntrainer:\n  max_epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+, column \d+: YAML syntax error"):
        load_config([str(bad)], [])


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config(["nope.yaml"], [])


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(["configs/demo/rdnet.yaml"], ["trainer.max_steps"])
    with pytest.raises(ConfigError, match=r"cannot parse the value of 'run.tags=\[\$\{x\}\]'"):
        load_config(["configs/demo/rdnet.yaml"], ["seed=1", "run.tags=[${x}]"])


def test_resolved_config_is_plain_yaml() -> None:
    cfg = load_config(["configs/demo/rdnet.yaml"], [])
    text = OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg)))
    assert "logger: wandb" in text and "source: digits" in text
