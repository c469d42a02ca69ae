"""fer's preprocessing from a detected face box to the emotion CNN's input (digest section 2.3).

grayscale -> square box (grow the shorter side) -> 10 px margin on each side -> crop from the frame padded by
40 px (fill: mean of its bottom two rows) -> resize to 64x64 -> scale to [-1, 1]. Offsets and rounding follow
fer 25.10 (`FER.tosquare`, `__apply_offsets`, `pad`) so the scores can be compared with the authors' CSVs.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

FRAME_PADDING = 40  # fer's PADDING: lets the margin reach past the frame edge
FACE_MARGIN = 10  # fer's default offsets (x, y)
FACE_SIZE = 64  # the mini-Xception's input side


def to_gray(image: np.ndarray, order: str = "bgr") -> np.ndarray:
    """(H, W, 3) uint8 in `order` ('bgr' as OpenCV/fer read frames, or 'rgb') -> (H, W) uint8; gray passes."""
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    codes = {"bgr": cv2.COLOR_BGR2GRAY, "rgb": cv2.COLOR_RGB2GRAY}
    if order not in codes:
        raise ValueError(f"unknown channel order {order!r}; use one of {sorted(codes)}")
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), codes[order])


def square_box(box: Sequence[int]) -> tuple[int, int, int, int]:
    """Grow the shorter side of (x, y, w, h) to the longer one, keeping the centre (floor on odd differences)."""
    x, y, w, h = (int(v) for v in box)
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    return x, y, w, h


def pad_frame(gray: np.ndarray, padding: int = FRAME_PADDING) -> np.ndarray:
    """(H, W) -> (H + 2p, W + 2p); fill is the mean of the bottom two rows (fer's choice, usually the torso)."""
    fill = float(gray[-2:].mean())
    return cv2.copyMakeBorder(gray, padding, padding, padding, padding, cv2.BORDER_CONSTANT, value=fill)


def crop_face(padded: np.ndarray, box: Sequence[int], margin: int = FACE_MARGIN) -> np.ndarray:
    """The square, margined face from a frame padded by `FRAME_PADDING`, resized to (64, 64) uint8."""
    x, y, w, h = square_box(box)
    x1, y1 = max(0, x - margin + FRAME_PADDING), max(0, y - margin + FRAME_PADDING)
    # As in fer, only the start is clamped; slicing clamps the end at the padded frame's border.
    x2, y2 = x + w + margin + FRAME_PADDING, y + h + margin + FRAME_PADDING
    face = padded[y1:y2, x1:x2]
    if face.size == 0:
        raise ValueError(f"face box {tuple(box)} lies outside the {padded.shape} padded frame; nothing to crop")
    return cv2.resize(face, (FACE_SIZE, FACE_SIZE))  # bilinear, as fer


def scale_to_unit(faces: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] (mini-Xception's 'v2' input scaling)."""
    return (faces.astype(np.float32) / 255.0 - 0.5) * 2.0


def crop_faces(gray: np.ndarray, boxes: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """(H, W) uint8 gray frame + N boxes (x, y, w, h) -> (N, 64, 64) uint8 crops (what a loader worker sends)."""
    if gray.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale frame (see to_gray), got shape {gray.shape}")
    if not len(boxes):
        return np.empty((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    padded = pad_frame(gray)
    return np.stack([crop_face(padded, box) for box in boxes])


def crops_to_input(crops: np.ndarray) -> torch.Tensor:
    """(N, 64, 64) uint8 crops -> (N, 1, 64, 64) float32 in [-1, 1], the CNN's input."""
    return torch.from_numpy(scale_to_unit(crops))[:, None]


def preprocess_faces(gray: np.ndarray, boxes: Sequence[Sequence[int]] | np.ndarray) -> torch.Tensor:
    """(H, W) uint8 gray frame + N boxes (x, y, w, h) -> (N, 1, 64, 64) float32 in [-1, 1]."""
    return crops_to_input(crop_faces(gray, boxes))
