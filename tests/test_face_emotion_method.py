"""face_emotion end to end: videos built from scikit-image's bundled photos -> fer-format CSVs per video."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import BLANK_EVERY, FACE_EMOTION_DEMO, FRAMES, REPO, face_emotion_cli
from lightning_modules.face_emotion import module as _face_emotion  # noqa: F401  (registers the method)
from lightning_modules.face_emotion.emotion_net import EMOTIONS
from lightning_modules.face_emotion.preview import BOX_COLOUR

FER_COLUMNS = ["box0", *(f"{e}0" for e in EMOTIONS)]


@pytest.fixture(scope="module")
def videos(face_videos: Path) -> Path:
    return face_videos


def test_writes_fer_format_csvs_and_records_failures(
    videos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert face_emotion_cli(videos, out, tmp_path / "runs") == 0
    progress = [r.getMessage() for r in caplog.records if "videos done" in r.getMessage()]
    assert [m.split("videos done ")[1].split(",")[0] for m in progress] == [
        f"{i}/4 (this rank)" for i in (1, 2, 3)
    ]  # broken.avi never completes
    assert all(m.endswith("frames/s") for m in progress)
    assert sorted(p.name for p in out.glob("*.csv")) == ["astronaut-t300.csv", "camera-t300.csv", "coffee-t300.csv"]
    assert not list(out.glob(".*.tmp")), "a temp file was left behind"

    table = pd.read_csv(out / "astronaut-t300.csv", index_col=0)
    assert list(table.columns) == FER_COLUMNS  # fer's to_pandas layout for one face per frame
    # fer drops frames without a face: only the astronaut frames remain, in frame order.
    assert list(table.index) == [i for i in range(FRAMES) if i % BLANK_EVERY != 0]
    scores = table[[f"{e}0" for e in EMOTIONS]]
    assert (scores.idxmax(axis=1) == "happy0").all()
    assert (scores.round(2) == scores).all().all()  # fer's 2-decimal rounding
    assert np.allclose(scores.sum(axis=1), 1.0, atol=0.05)
    x, y, w, h = ast.literal_eval(table["box0"].iloc[0])  # "[x, y, w, h]" as in the authors' CSVs
    assert w > 50 and h > 50 and y + h / 2 < 256  # the face is in the upper half of the 512 px photo

    # No face in any frame: fer's empty DataFrame, still written so that a re-run skips the video.
    assert (out / "camera-t300.csv").read_text().strip() == '""'
    failed = (out / "failed.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failed] == [str(videos / "broken.avi")]


def test_predict_scores_a_video_and_an_image_like_theface_emotion_cli(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import skimage.data
    from PIL import Image

    from conftest import only_run_dir
    from predict import main as predict_main

    out = tmp_path / "out"
    assert face_emotion_cli(videos, out, tmp_path / "runs") == 0
    run = only_run_dir(tmp_path / "runs", "face_emotion")
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "face.png")
    capsys.readouterr()
    assert predict_main([str(run), str(videos / "astronaut.avi"), str(tmp_path / "face.png")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["frames_with_faces"] for row in rows] == [FRAMES - FRAMES // BLANK_EVERY, 1]
    # The same pipeline as `trainer.predict`: byte-identical CSV for the same video.
    assert Path(rows[0]["csv"]).read_bytes() == (out / "astronaut-t300.csv").read_bytes()
    image_scores = pd.read_csv(rows[1]["csv"], index_col=0)
    assert image_scores[[f"{e}0" for e in EMOTIONS]].idxmax(axis=1).tolist() == ["happy0"]


def test_preview_marks_the_first_face_frame(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert face_emotion_cli(videos, out, tmp_path / "runs", "preview=true") == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == ["astronaut-t300-preview.jpg"]  # no face, no preview
    preview = cv2.imread(str(out / "astronaut-t300-preview.jpg"))
    x, y, w, h = ast.literal_eval(pd.read_csv(out / "astronaut-t300.csv", index_col=0)["box0"].iloc[0])
    amber = np.all(np.abs(preview.astype(int) - BOX_COLOUR) < 60, axis=-1)
    # The box outline is drawn on the CSV's box: amber along its left edge, none in the photo's far corner.
    assert amber[y + h // 4 : y + 3 * h // 4, max(0, x - 2) : x + 3].any(axis=1).all()
    assert amber[-40:, -40:].mean() == 0


def test_rerun_skips_finished_videos(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert face_emotion_cli(videos, out, tmp_path / "runs") == 0
    marker = "kept,from,the,first,run\n"
    (out / "astronaut-t300.csv").write_text(marker)
    (out / "coffee-t300.csv").unlink()
    assert face_emotion_cli(videos, out, tmp_path / "runs") == 0
    assert (out / "astronaut-t300.csv").read_text() == marker  # not recomputed
    assert (out / "coffee-t300.csv").is_file()  # the missing one is


def test_missing_output_dir_is_a_config_error(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert face_emotion_cli(videos, tmp_path / "out", tmp_path / "runs", "data.output_dir=null") == 2
    assert "data.output_dir" in capsys.readouterr().err


# Lightning's ddp launcher re-executes the entry script. This one is train.py's main plus one "wrote <csv>"
# log line per output written, so the test can count writes across ranks.
LAUNCHER = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, {repo!r})
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lightning_modules.face_emotion.module").setLevel(logging.INFO)
    import lightning_modules.face_emotion.module  # noqa: F401
    from tenfold.cli import main
    sys.exit(main())
""")


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_writes_each_video_once_and_matches_one_process(videos: Path, tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "ddp"
    assert face_emotion_cli(videos, single, tmp_path / "runs1") == 0
    launcher = tmp_path / "launch_face_emotion.py"
    launcher.write_text(LAUNCHER.format(repo=str(REPO)))
    proc = subprocess.run(
        [
            sys.executable,
            str(launcher),
            "--config",
            FACE_EMOTION_DEMO,
            f"data.videos_dir={videos}",
            f"data.output_dir={multi}",
            f"run.root={tmp_path / 'runs2'}",
            "logger=none",
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            # Each rank's workers split its videos' frames; the 1-process run above splits by video.
            "data.worker_split=frames",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [line.split("wrote ", 1)[1].split(" (")[0] for line in proc.stderr.splitlines() if "wrote " in line]
    expected = sorted(p.name for p in single.glob("*.csv"))
    assert sorted(Path(p).name for p in written) == expected  # every video once, across both ranks
    for name in expected:
        assert (multi / name).read_text() == (single / name).read_text(), name
    assert [line.split("\t")[0] for line in (multi / "failed.txt").read_text().splitlines()] == [
        str(videos / "broken.avi")
    ]
