"""OpenCV Haar frontal-face detector with fer's default `detectMultiScale` settings.

fer's Haar path: scaleFactor 1.1, minNeighbors 5, minSize 50 px, CASCADE_SCALE_IMAGE, on the grayscale frame.
(The paper itself ran fer with MTCNN; this is fer's default detector, which needs no extra weights.)
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # ships inside the opencv wheels
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE_SIZE = 50


@lru_cache(maxsize=1)
def haar_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + HAAR_CASCADE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"OpenCV could not load {path}; reinstall `opencv-python-headless<5`")
    return cascade


def detect_faces(
    gray: np.ndarray,
    scale_factor: float = SCALE_FACTOR,
    min_neighbors: int = MIN_NEIGHBORS,
    min_size: int = MIN_FACE_SIZE,
) -> np.ndarray:
    """(H, W) uint8 grayscale frame -> (N, 4) int boxes (x, y, w, h); (0, 4) when no face is found."""
    if gray.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale frame, got shape {gray.shape}")
    boxes = haar_cascade().detectMultiScale(
        np.ascontiguousarray(gray, dtype=np.uint8),
        scaleFactor=scale_factor,
        minNeighbors=min_neighbors,
        flags=cv2.CASCADE_SCALE_IMAGE,
        minSize=(min_size, min_size),
    )
    # OpenCV returns an empty tuple, not an empty array, when nothing is found.
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
