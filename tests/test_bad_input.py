"""Bad input gets one clear error line naming the thing and the fix, and a non-zero exit."""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import pytest

from conftest import TINY, error_line, train_subprocess

DEMO = "configs/demo/rdnet.yaml"


pytestmark = pytest.mark.usefixtures("in_repo")


def test_missing_config_file(capsys: pytest.CaptureFixture) -> None:
    assert "config file not found: configs/nope.yaml" in error_line(capsys, "--config", "configs/nope.yaml")


def test_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rdnet\ndata: {source: digits\n")
    assert "YAML syntax error" in error_line(capsys, "--config", str(bad))


def test_unknown_method(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "method=nope")
    assert "unknown method 'nope'" in line and "rdnet" in line


def test_unknown_key(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "optim.learning_rate=0.1")
    assert "unknown key 'optim.learning_rate'" in line and "lr (float)" in line


def test_wrong_type(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "data.batch_size_per_device=big")
    assert "data.batch_size_per_device" in line and "int" in line


def test_paper_config_without_imagenet_names_the_data_keys(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", "configs/rdnet.yaml", f"run.root={tmp_path}", "logger=none")
    assert "data.root" in line and "train/" in line


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={tmp_path / 'absent'}", *TINY)
    assert f"{tmp_path / 'absent' / 'train'}" in line and "data.root" in line


def test_empty_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={tmp_path / 'data'}", *TINY)
    assert "holds no images" in line and str(tmp_path / "data" / "train") in line


def test_corrupt_image_is_named(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    corrupt = data / "train" / "dots" / "0.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={data}", *TINY, "data.batch_size_per_device=36", "trainer.limit_train_batches=1")
    assert f"cannot decode image file {corrupt}" in line


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "half.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", f"ckpt_path={ckpt}", *TINY)
    assert f"cannot read checkpoint {ckpt}" in line and "truncated" in line


def test_real_process_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rdnet\ntrainer: {max_epochs: three}\n")
    proc = train_subprocess("--config", str(bad), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "trainer.max_epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_paper_asr_config_without_cifar100_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", "configs/asr.yaml", f"run.root={tmp_path}", "logger=none",
                      f"data.cache_dir={tmp_path / 'empty-hf-cache'}")
    assert "uoft-cs/cifar100" in line and "data.offline=false" in line and "data.root" in line


@pytest.mark.parametrize("override", ["trainer.devices=abc", "trainer.precision=17"])
def test_invalid_trainer_setting(override: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", override, *TINY)
    assert line.startswith("error: invalid trainer.* setting")


# --------------------------------------------------------------------------------------------------
# Every bad value fails at load time, in a process of its own: exit 2, one `error:` line, no traceback,
# and no run directory. Each case is train.py's main in a process forked from this one (its own exit code
# and stderr, without paying ~3 s of imports again); a few also run as `python train.py`.

RDNET, LM, VIT = DEMO, "configs/demo/loraprune_lm.yaml", "configs/demo/loraprune_vit.yaml"
LENS, EDOF = "configs/demo/deeplens_singlet.yaml", "configs/demo/deeplens_edof.yaml"
BAD_VALUES = {
    "lr_negative": (RDNET, ["optim.lr=-0.1"], "optim.lr=-0.1 must be a positive number"),
    "lr_zero": (RDNET, ["optim.lr=0"], "optim.lr=0.0 must be a positive number"),
    "batch_zero": (RDNET, ["data.batch_size_per_device=0"], "data.batch_size_per_device=0 must be a positive"),
    "max_epochs_negative": (RDNET, ["trainer.max_epochs=-1"], "trainer.max_epochs=-1 must be >= 0"),
    "image_size_zero": (RDNET, ["data.image_size=0"], "data.image_size=0 must be a positive integer"),
    "optimizer_unknown": (RDNET, ["optim.name=adamx"], "optim.name='adamx' is not a timm optimizer"),
    "scheduler_unknown": (RDNET, ["optim.scheduler=cosin"], "optim.scheduler='cosin' is not a timm scheduler"),
    "checkpoint_mode": (RDNET, ["checkpoint.mode=maximum"], "checkpoint.mode='maximum' must be min or max"),
    "monitor_not_logged": (RDNET, ["checkpoint.monitor=val/acc"], "checkpoint.monitor='val/acc' is not a metric"),
    "accumulate_zero": (RDNET, ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be"),
    "both_checkpoint_triggers": (RDNET, ["checkpoint.every_n_train_steps=10", "checkpoint.every_n_epochs=1"],
                                 "are alternatives: set only one"),
    "arch_unknown_key": (RDNET, ["model.arch.growth=3"], "unknown key 'model.arch.growth'"),
    "rdnet_name_unknown": (RDNET, ["model.name=rdnet_huge"], "model.name"),
    "run_name_escapes": (RDNET, ["run.name=../../x"], "run.name='../../x' must be one plain directory name"),
    "resume_auto_without_name": (RDNET, ["resume=auto"], "resume=auto continues the run named by run.name"),
    "secret_env_interpolation": (RDNET, ["run.group=${oc.env:TENFOLD_TEST_API_KEY}"],
                                 "interpolates the secret-looking variable TENFOLD_TEST_API_KEY"),
    "lora_rank_zero": (LM, ["model.lora.rank=0"], "model.lora.rank=0 must be at least 1"),
    "sparsity_one": (LM, ["model.prune.final_sparsity=1.0"], "model.prune.final_sparsity=1.0 must be in [0, 1)"),
    "build_unknown_key": (LM, ["model.build.api_key=sk-live-123"], "unknown key 'model.build.api_key'"),
    "vit_name_unknown": (VIT, ["model.name=vit_nope"], "model.name='vit_nope' is not a timm ViT"),
    "rays_zero": (LENS, ["data.batch_size_per_device=0"], "data.batch_size_per_device=0 must be a positive"),
    "patch_size_zero": (EDOF, ["data.patch_size=0"], "data.patch_size=0 must be a positive integer"),
}
# Cases that need a file made first: (config, overrides with {tmp}, expected text with {tmp}).
BAD_FILES = {
    "empty_corpus": (LM, ["data.source=text", "data.files.train=[{tmp}/empty.txt]",
                          "data.files.validation=[{tmp}/empty.txt]", "data.files.test=[{tmp}/empty.txt]"],
                     "data.files.train: {tmp}/empty.txt is empty"),
    "root_not_a_directory": (RDNET, ["run.root={tmp}/a_file"], "Not a directory ({tmp}/a_file/rdnet)"),
    "root_not_writable": (RDNET, ["run.root=/proc/tenfold-runs"], "cannot create the run directory"),
    "checkpoint_of_another_method": (RDNET, ["ckpt_path={tmp}/lens.ckpt"],
                                     "{tmp}/lens.ckpt is a checkpoint of method 'deeplens', not of 'rdnet'"),
}


REAL_PROCESS = ("lr_zero", "empty_corpus", "checkpoint_of_another_method")  # config, data and resume stage
ENV = {"TENFOLD_TEST_API_KEY": "sk-live-123", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], Path, str]]:
    """name -> (train.py arguments, the run.root that must stay empty, the expected error text)."""
    import torch

    from tenfold.cli import load_config
    from tenfold.registry import get_method

    for config in (RDNET, LM, VIT, LENS, EDOF):  # the forked children inherit these imports
        get_method(load_config([config], []).method)
    import tenfold.runner  # noqa: F401

    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty.txt").write_text("\n  \n")
    (tmp / "a_file").write_text("not a directory")
    torch.save({"hyper_parameters": {"config": {"method": "deeplens"}}, "state_dict": {}}, tmp / "lens.ckpt")
    cases = {}
    files = {name: (config, [o.format(tmp=tmp) for o in overrides], expected.format(tmp=tmp))
             for name, (config, overrides, expected) in BAD_FILES.items()}
    for name, (config, overrides, expected) in {**BAD_VALUES, **files}.items():
        root = tmp / name
        if not any(o.startswith("run.root=") for o in overrides):
            overrides = [f"run.root={root}", *overrides]
        cases[name] = (["--config", config, *overrides, "logger=none"], root, expected)
    return cases


def forked_train(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """train.py's main in a forked child: (exit code, stderr). The parent has the imports already."""
    from tenfold.cli import main

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stderr to the pipe, then exit with main's code, whatever happens
        code = 1
        try:
            os.close(read)
            os.dup2(write, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stdout, sys.stderr = open(1, "w"), open(2, "w")  # noqa: SIM115 (the child exits below)
            os.environ.pop("TENFOLD_RUN_DIR", None)
            os.environ.update(env)
            sys.argv = ["train.py", *args]
            code = main(args)
        except BaseException:  # noqa: BLE001 (a traceback is what the test looks for)
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    deadline, chunks, ended = time.monotonic() + timeout, [], False
    while not ended and (left := deadline - time.monotonic()) > 0 and select.select([read], [], [], left)[0]:
        chunk = os.read(read, 65536)
        chunks.append(chunk)
        ended = not chunk  # EOF: the child is exiting
    os.close(read)
    if not ended:
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    return (os.waitstatus_to_exitcode(status) if ended else -9), b"".join(chunks).decode(errors="replace")


def _check(code: int, stderr: str, root: Path, expected: str) -> None:
    errors = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert code == 2, stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert expected in errors[0]
    leftovers = list(root.rglob("*")) if root.exists() else []
    assert leftovers == [], leftovers  # no run directory, no checkpoint


@pytest.mark.parametrize("case", [*BAD_VALUES, *BAD_FILES])
def test_bad_value_fails_at_load_in_one_line(case: str, bad_cases: dict) -> None:
    args, root, expected = bad_cases[case]
    _check(*forked_train(args, ENV), root, expected)


@pytest.mark.parametrize("case", REAL_PROCESS)
def test_bad_value_in_a_real_train_py_process(case: str, bad_cases: dict) -> None:
    args, root, expected = bad_cases[case]
    proc = train_subprocess(*args, timeout=300, env=ENV)
    _check(proc.returncode, proc.stderr, root, expected)
