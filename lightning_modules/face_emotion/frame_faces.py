"""Per-frame face finding (detection + crops) for face_emotion, run where the frames are decoded.

`FrameFaceFinder` turns one decoded BGR frame into its face boxes and 64x64 uint8 crops. The video datamodule
calls it inside its DataLoader workers (one cv2 thread each), so detection and decoding use every core while
the main process only batches the emotion CNN. It is stateful (the fast mode tracks faces from one sampled
frame to the next) within a segment of consecutive sampled frames: a whole video, or one chunk of it when the
workers split a video's frames (`data.worker_split`), so tracking restarts with a full scan at each chunk.

Default mode (`model.detect_scale=1`, `model.track_every=0`): fer's own path, the configured detector on the
full frame, so boxes and CSVs are fer's. Fast mode, chosen knowingly:
- `detect_scale=s < 1` runs the detector on the frame resized by s (cv2 INTER_AREA) with the minimum face size
  scaled by s, and maps the boxes back to the full frame, where the faces are cropped as usual;
- `track_every=k > 0` scans the whole frame only on every k-th sampled frame of a video and whenever a face is
  lost; on the frames between, each face of the previous sampled frame is looked for in its box grown by
  `track_margin` of its size on every side, at sizes within [1/1.5, 1.5] of its previous size. Faces keep the
  previous frame's order; a new face is found at the next full scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lightning_modules.face_emotion.face_detect import haar_cascade
from lightning_modules.face_emotion.preprocess import crop_faces, to_gray

TRACK_SIZE_RANGE = 1.5  # a tracked face may shrink or grow by this factor between sampled frames
EMPTY_BOXES = np.zeros((0, 4), dtype=np.int64)


@dataclass
class FrameFaces:
    """One frame's faces: (N, 4) int64 boxes (x, y, w, h) in full-frame pixels, (N, 64, 64) uint8 crops."""

    boxes: np.ndarray
    crops: np.ndarray
    full_scan: bool = True  # False: found by tracking
    frame: np.ndarray | None = None  # the BGR frame, kept only when a preview needs it


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) boxes (x, y, w, h) -> (N, M) intersection over union."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class FrameFaceFinder:
    """Boxes and crops of each frame with `model.*`'s detector and mode (picklable: it travels to workers)."""

    def __init__(self, model_cfg: Any, keep_frame: bool = False) -> None:
        self.detector = str(model_cfg.detector)
        self.scale_factor = float(model_cfg.haar.scale_factor)
        self.min_neighbors = int(model_cfg.haar.min_neighbors)
        self.min_size = int(model_cfg.haar.min_size)
        self.min_face_size = int(model_cfg.min_face_size)  # MTCNN's
        self.detect_scale = float(model_cfg.detect_scale)
        self.track_every = int(model_cfg.track_every)
        self.track_margin = float(model_cfg.track_margin)
        self.keep_frame = keep_frame
        self._segment: Any = None  # the run of consecutive sampled frames the tracking state belongs to
        self._since_scan = 0
        self._previous = EMPTY_BOXES

    @property
    def is_fer_default(self) -> bool:
        return self.detect_scale == 1.0 and self.track_every == 0

    def __call__(self, frame_bgr: np.ndarray, segment: Any = "") -> FrameFaces:
        """`segment` names the run of consecutive sampled frames this one continues: the video id, or (video id,
        chunk) when the loader workers split a video's frames; a new one always starts with a full scan."""
        gray = to_gray(frame_bgr, "bgr")
        if segment != self._segment:
            self._segment, self._since_scan, self._previous = segment, 0, EMPTY_BOXES
        boxes, full = self._find(frame_bgr, gray)
        self._previous = boxes
        return FrameFaces(boxes, crop_faces(gray, boxes), full, frame_bgr if self.keep_frame else None)

    # ---- modes

    def _find(self, frame_bgr: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, bool]:
        tracking = self.track_every > 0 and len(self._previous) and 0 < self._since_scan < self.track_every
        if tracking:
            boxes = self._track(frame_bgr, gray)
            if boxes is not None:
                self._since_scan += 1
                return boxes, False
        self._since_scan = 1
        return self._detect(frame_bgr, gray, self.detect_scale), True

    def _track(self, frame_bgr: np.ndarray, gray: np.ndarray) -> np.ndarray | None:
        """Each previous face, looked for near where it was; None as soon as one is lost (then: full scan)."""
        height, width = gray.shape
        found = []
        for x, y, w, h in self._previous.tolist():
            mx, my = round(self.track_margin * w), round(self.track_margin * h)
            x0, y0 = max(0, x - mx), max(0, y - my)
            x1, y1 = min(width, x + w + mx), min(height, y + h + my)
            side = max(w, h)
            candidates = self._detect(
                frame_bgr[y0:y1, x0:x1],
                gray[y0:y1, x0:x1],
                self.detect_scale,
                (side / TRACK_SIZE_RANGE, side * TRACK_SIZE_RANGE),
            )
            if not len(candidates):
                return None
            candidates = candidates + np.array([x0, y0, 0, 0])
            found.append(candidates[np.argmax(box_iou(np.array([[x, y, w, h]]), candidates)[0])])
        boxes = np.asarray(found, dtype=np.int64).reshape(-1, 4)
        overlap = box_iou(boxes, boxes) - np.eye(len(boxes))
        return None if (overlap > 0.5).any() else boxes  # two tracks on one face: rescan

    # ---- detectors

    def _detect(
        self, frame_bgr: np.ndarray, gray: np.ndarray, scale: float, size_range: tuple[float, float] | None = None
    ) -> np.ndarray:
        """(N, 4) full-resolution boxes of `gray` (or the BGR frame for MTCNN), detected at `scale`."""
        if scale != 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            if self.detector == "mtcnn":
                frame_bgr = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)
        if self.detector == "haar":
            boxes = self._haar(gray, scale, size_range)
        else:
            boxes = self._mtcnn(frame_bgr, scale)
            if size_range is not None:
                side = boxes[:, 2:].max(axis=1) / scale
                boxes = boxes[(side >= size_range[0]) & (side <= size_range[1])]
        if scale == 1.0:
            return boxes
        return np.round(boxes / scale).astype(np.int64).reshape(-1, 4)

    def _haar(self, gray: np.ndarray, scale: float, size_range: tuple[float, float] | None) -> np.ndarray:
        min_side = max(1, round(self.min_size * scale))
        max_side = (0, 0)
        if size_range is not None:
            min_side = max(min_side, int(size_range[0] * scale))
            max_side = (round(size_range[1] * scale),) * 2
        if min(gray.shape) < min_side:
            return EMPTY_BOXES
        boxes = haar_cascade().detectMultiScale(
            np.ascontiguousarray(gray, dtype=np.uint8),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            flags=cv2.CASCADE_SCALE_IMAGE,
            minSize=(min_side, min_side),
            maxSize=max_side,
        )
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)

    def _mtcnn(self, frame_bgr: np.ndarray, scale: float) -> np.ndarray:
        # Imported here: MTCNN brings its own weights and code, unused by the Haar path.
        from lightning_modules.face_emotion.mtcnn_detect import detect_faces_mtcnn

        # facenet's MTCNN expects RGB. fer passes its BGR frame unconverted; on real faces the boxes move by a few
        # pixels only (tests/test_mtcnn_detect.py), and RGB is what the detector was trained on.
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        min_face = max(1, round(self.min_face_size * scale))
        return np.asarray(detect_faces_mtcnn(rgb, min_face_size=min_face), dtype=np.int64).reshape(-1, 4)
