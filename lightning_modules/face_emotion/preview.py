"""Annotated preview of a scored frame: each face's box, its index and its top emotion with the score."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lightning_modules.face_emotion.emotion_net import EMOTIONS
from tenfold.checkpoint_io import atomic_write

BOX_COLOUR = (0, 200, 255)  # BGR amber: visible on skin, sky and studio backgrounds alike


def annotate(frame_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A copy of the frame with `face<i>: <emotion> <score>` above each (x, y, w, h) box, in detector order
    (the index is the `<i>` of the CSV's box<i>/emotion<i> columns)."""
    image = frame_bgr.copy()
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for i, ((x, y, w, h), face_scores) in enumerate(zip(boxes.tolist(), scores)):
        top = int(np.argmax(face_scores))
        cv2.rectangle(image, (x, y), (x + w, y + h), BOX_COLOUR, thickness)
        label = f"face{i}: {EMOTIONS[top]} {face_scores[top]:.2f}"
        cv2.putText(
            image,
            label,
            (x, max(12, y - 6)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            BOX_COLOUR,
            thickness,
            cv2.LINE_AA,
        )
    return image


def preview_path(output_dir: str | Path, video_id: str, scheme: str) -> Path:
    """Beside the video's CSV; the extension keeps it out of the `*-<scheme>.csv` pattern the analysis reads."""
    return Path(output_dir) / f"{video_id}-{scheme}-preview.jpg"


def write_preview(path: Path, image_bgr: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", image_bgr)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the preview for {path}")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))
