"""The Face of Populism sampling schemes, shared by the video datamodule and the statistics job.

Kept apart from `video_frames.py` so that the analysis (pandas only) does not import OpenCV.
"""

from __future__ import annotations

import enum


class SamplingScheme(enum.StrEnum):
    t300 = "t300"  # about 300 evenly spaced frames per video (the paper's main analysis)
    f50 = "f50"  # every 50th frame (its robustness check)
