"""MTCNN face detector through facenet-pytorch, as fer >= 22.5 runs it (`FER(mtcnn=True)`, digest section 2.3).

facenet-pytorch's metadata pins torch<2.3 and numpy<2, so it is installed without its dependencies:
`pip install --no-deps facenet-pytorch`. Its MTCNN needs only torch, torchvision.ops, PIL and numpy (plus
`requests`/`tqdm`, which its package `__init__` imports for InceptionResnetV1's downloads; both are already
pulled in by lightning/wandb). The P/R/O-Net weights are local files in the wheel (`facenet_pytorch/data/*.pt`);
nothing is downloaded.

Box convention (fer's `find_faces`, MTCNN branch): facenet returns float (x1, y1, x2, y2); fer keeps
`[int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)]`, i.e. truncation toward zero of each corner, then
the difference. The result has the same (N, 4) int64 (x, y, w, h) layout as `face_detect.detect_faces`.

Differences from fer that are deliberate: fer builds `MTCNN(keep_all=True)` with facenet's default
min_face_size=20 and feeds it the BGR frame unconverted; here `min_face_size` defaults to the paper's 40 px and
the input is RGB, which is what facenet's MTCNN expects.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from tenfold.errors import CheckpointError

MIN_FACE_SIZE = 40  # the paper's README setting; facenet-pytorch's (and fer's) default is 20
INSTALL_HINT = "pip install --no-deps facenet-pytorch"


@lru_cache(maxsize=4)
def mtcnn_model(min_face_size: int = MIN_FACE_SIZE) -> Any:
    """facenet-pytorch's MTCNN on CPU with `keep_all=True`, built once per `min_face_size`."""
    try:
        from facenet_pytorch.models.mtcnn import MTCNN
    except ImportError as exc:
        raise CheckpointError(
            f"MTCNN face detection needs facenet-pytorch (it ships the P/R/O-Net weights); install it without "
            f"its torch<2.3/numpy<2 pins: `{INSTALL_HINT}` ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        model = MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu")
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"facenet-pytorch is installed but its MTCNN weights (facenet_pytorch/data/*net.pt) are missing; "
            f"reinstall with `{INSTALL_HINT}` ({exc})"
        ) from exc
    return model.eval()


def detect_faces_mtcnn(rgb: np.ndarray, min_face_size: int = MIN_FACE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame -> (N, 4) int64 boxes (x, y, w, h) as fer converts them; (0, 4) when none."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {rgb.shape}")
    if min_face_size < 1:
        raise ValueError(f"min_face_size must be at least 1, got {min_face_size}")
    empty = np.zeros((0, 4), dtype=np.int64)
    # facenet's image pyramid is empty when the image is smaller than min_face_size, and it then fails in
    # torch.cat; no face that large can be in the frame anyway.
    if min(rgb.shape[:2]) < min_face_size:
        return empty
    boxes, _ = mtcnn_model(int(min_face_size)).detect(np.ascontiguousarray(rgb, dtype=np.uint8))
    if boxes is None or len(boxes) == 0:
        return empty
    # facenet 2.6 returns an object-dtype array of Python floats; int() truncates as fer does.
    faces = [[int(b[0]), int(b[1]), int(b[2]) - int(b[0]), int(b[3]) - int(b[1])] for b in boxes]
    return np.asarray(faces, dtype=np.int64).reshape(-1, 4)
