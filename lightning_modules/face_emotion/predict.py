"""Per-frame emotion scores of videos or images with a face_emotion run's detector and settings.

Each input gets `<run>/predictions/<name>-<scheme>.csv` in fer's format (an image is a one-frame video);
one JSON line per input with the CSV path and the number of frames with a face.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
from omegaconf import OmegaConf

from datamodules.video_frames import VideoJob, decode_sampled_frames, output_path, write_video_output_atomically
from lightning_modules.face_emotion.module import FaceEmotionModule, fer_row, fer_table
from tenfold.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BATCH = 16  # frames per forward pass


def predict(run_dir: Path, inputs: list[str], options: dict[str, str]) -> Iterator[dict]:
    if not inputs:
        raise ConfigError("pass one or more video or image files to score")
    run_dir = Path(run_dir)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    out_dir = run_dir / "predictions"
    config["data"]["output_dir"] = str(out_dir)
    module = FaceEmotionModule(config).eval()
    scheme, decimals = module.cfg.data.scheme, module.cfg.model.round_scores
    for path in inputs:
        rows = []
        for chunk in _frame_chunks(path, scheme):
            boxes_per_frame, scores = module.score_frames([frame for _, frame in chunk], Path(path).stem)
            start = 0
            for (index, _), boxes in zip(chunk, boxes_per_frame):
                if len(boxes):
                    rows.append((index, fer_row(boxes, scores[start : start + len(boxes)], decimals)))
                    start += len(boxes)
        target = output_path(out_dir, Path(path).stem, scheme)
        write_video_output_atomically(target, fer_table(rows))
        yield {"input": path, "csv": str(target), "frames_with_faces": len(rows)}


def _frame_chunks(path: str, scheme: str) -> Iterator[list]:
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        frame = cv2.imread(path)
        if frame is None:
            raise DataError(f"cannot decode image file {path}; remove or replace it")
        yield [(0, frame)]
        return
    chunk = []
    for item in decode_sampled_frames(VideoJob(Path(path).stem, path), scheme):
        chunk.append(item)
        if len(chunk) == BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
