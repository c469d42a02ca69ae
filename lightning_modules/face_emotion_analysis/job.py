"""`method: face_emotion_analysis`: the paper's statistics as a tenfold job (no Trainer, same run handling).

    python train.py --config configs/face_emotion_analysis.yaml [data.scheme=f50] [logger=wandb]

Reads the authors' released per-frame CSVs (or a face_emotion run's `data.output_dir`), writes the markdown
report, its figure and every table as CSV under `<run dir>/report/`, and logs the headline numbers as metrics,
the tables as W&B tables and the figure as a W&B image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from datamodules.frame_sampling import SamplingScheme
from lightning_modules.face_emotion_analysis import analysis
from tenfold.config import JobConfig, LoggerKind
from tenfold.errors import ConfigError
from tenfold.registry import register_job
from tenfold.run_dir import RunDir

# The authors' release (MIT), trimmed to what the analysis reads, ships with the repository.
RELEASED_DATA = Path(__file__).resolve().parents[2] / "data" / "face_of_populism"


@dataclass
class FaceEmotionAnalysisData:
    # The authors' release: raw/ (yt-urls.csv, gps.csv), results/ (manual marks and review) and per_frame/.
    root: str = str(RELEASED_DATA)
    # Per-frame CSVs to analyse; None: <root>/per_frame. A face_emotion run's data.output_dir has the same layout
    # (but its face indices follow your detector, so the manual leader marks may point at another face).
    per_frame_dir: str | None = None
    scheme: SamplingScheme = SamplingScheme.t300  # t300: the paper's main analysis; f50: its robustness check


@dataclass
class FaceEmotionAnalysisConfig(JobConfig):
    method: str = "face_emotion_analysis"
    logger: LoggerKind = LoggerKind.csv
    data: FaceEmotionAnalysisData = field(default_factory=FaceEmotionAnalysisData)


def check_sources(data: FaceEmotionAnalysisData) -> tuple[Path, Path]:
    """(root, per-frame folder), or one ConfigError naming the key and what to point it at."""
    root = Path(data.root)
    needed = [
        "raw/yt-urls.csv",
        "raw/gps.csv",
        f"results/yt-urls-mark-manual-{data.scheme}.csv",
        "results/manual_review.json",
    ]
    missing = [name for name in needed if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"data.root={data.root}: missing {', '.join(missing)}; point data.root at the Face of Populism "
            f"release (the folder with raw/ and results/, shipped as {RELEASED_DATA})"
        )
    per_frame = root / "per_frame" if data.per_frame_dir is None else Path(data.per_frame_dir)
    if not any(per_frame.glob(f"*-{data.scheme}.csv")):
        raise ConfigError(
            f"data.per_frame_dir={per_frame}: no *-{data.scheme}.csv files; point it at the released per_frame/ "
            "folder or at a face_emotion run's data.output_dir"
        )
    return root, per_frame


def headline_metrics(headline: pd.DataFrame, levels: pd.DataFrame) -> dict[str, float]:
    """The numbers the paper's text quotes, as flat metric names (analysis/<score>/<statistic>)."""
    metrics = {}
    for score in ("negative", "neutral"):
        for column in ("mean_pluralist", "mean_populist", "t", "p", "cohen_d"):
            metrics[f"analysis/{score}/{column}"] = float(headline.loc[score, column])
        for column in ("F", "p", "eta_sq"):
            metrics[f"analysis/{score}/anova_{column}"] = float(levels.loc[score, column])
    return metrics


def _log(loggers: list[Logger], metrics: dict[str, float], tables: dict[str, pd.DataFrame], figure: Path) -> None:
    from PIL import Image

    from tenfold.media import log_image

    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        if isinstance(logger, WandbLogger):
            for name, table in tables.items():
                logger.log_table(f"analysis/{name}", dataframe=table.reset_index())
    # The report's figure, through the platform's one image path (W&B and TensorBoard alike).
    with Image.open(figure) as image:
        log_image(
            loggers,
            "analysis/by_gps_level",
            image.convert("RGB"),
            step=0,
            caption="negative and neutral scores per video by GPS populism level",
        )


@register_job(
    "face_emotion_analysis",
    config=FaceEmotionAnalysisConfig,
)
def run_analysis(cfg: FaceEmotionAnalysisConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, Any]:
    root, per_frame = check_sources(cfg.data)
    scheme = cfg.data.scheme
    videos = analysis.load_videos(root, scheme, per_frame)
    shares = analysis.summarise_videos(root, scheme, analysis.dominant_shares, per_frame)
    flagged = analysis.review_flags(per_frame, scheme)

    out = run_dir.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "per_video": videos,
        "headline": analysis.headline_table(videos),
        "by_gps_level": analysis.level_table(videos),
        "dominant_emotion": analysis.dominant_table(shares, videos),
        "review_flags": flagged.to_frame(),
    }
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv")
    report = analysis.write_report(videos, shares, scheme, out / "report.md", flagged)
    metrics = headline_metrics(tables["headline"], tables["by_gps_level"])
    _log(loggers, metrics, tables, out / f"{report.stem}-by-level.png")
    rank_zero_info(analysis.headline_table(videos).round(3).to_string())
    rank_zero_info(f"report: {report}")
    return metrics
