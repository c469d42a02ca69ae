"""facenet-pytorch's MTCNN (installed with `pip install --no-deps facenet-pytorch`) through `detect_faces_mtcnn`."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from lightning_modules.face_emotion.face_detect import detect_faces
from lightning_modules.face_emotion.mtcnn_detect import detect_faces_mtcnn
from lightning_modules.face_emotion.preprocess import to_gray


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_astronaut_has_one_face_matching_haar(astronaut: np.ndarray) -> None:
    boxes = detect_faces_mtcnn(astronaut)
    assert boxes.shape == (1, 4)
    assert boxes.dtype == np.int64
    x, y, w, h = boxes[0]
    assert w > 40 and h > 40
    assert 0 <= x and x + w <= astronaut.shape[1] and 0 <= y and y + h <= astronaut.shape[0]
    haar = detect_faces(to_gray(astronaut, "rgb"))
    assert haar.shape == (1, 4)
    assert iou(boxes[0], haar[0]) > 0.5


def test_uniform_gray_has_no_face() -> None:
    boxes = detect_faces_mtcnn(np.full((240, 320, 3), 128, dtype=np.uint8))
    assert boxes.shape == (0, 4)
    assert boxes.dtype == np.int64


@pytest.mark.parametrize("min_face_size", [300, 1000])  # the face is about 85x105 px; 1000 exceeds the image
def test_min_face_size_above_the_face_finds_none(astronaut: np.ndarray, min_face_size: int) -> None:
    boxes = detect_faces_mtcnn(astronaut, min_face_size=min_face_size)
    assert boxes.shape == (0, 4)
    assert boxes.dtype == np.int64


def test_rejects_non_rgb_input(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RGB"):
        detect_faces_mtcnn(to_gray(astronaut, "rgb"))
