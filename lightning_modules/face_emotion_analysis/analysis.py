"""Face of Populism statistics: leader-face selection, per-video means, GPS grouping, tests and a report.

Follows the digest (shared/papers/face_of_populism.md, sections 2.4-2.6 and 3): the leader's face scores are
averaged per video, each video inherits its party's GPS 2019 codes, and pluralist videos (Type_Populism 1-2)
are compared with populist ones (3-4). Pure pandas/scipy, so it runs without Lightning or torch; the
`face_emotion_analysis` job (analysis_job.py) runs it through train.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from datamodules.frame_sampling import SamplingScheme

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's column order
NEGATIVE = ("angry", "disgust", "fear", "sad")
SCHEMES = tuple(SamplingScheme)
GPS_LEVELS = (1, 2, 3, 4)  # Type_Populism: strongly / moderately pluralist, moderately / strongly populist
DROPPED_FACE = 999  # the authors' Face value for "no usable leader face"
REVIEW_SHARE = 0.05  # a second face in more than 5% of rows sent a video to manual review
HEADLINE_SCORES = ("negative", "neutral", "sad", "angry", "surprise", "happy", "disgust", "fear")
LEVEL_SCORES = ("negative", "neutral", "sad", "surprise")


# ---------------------------------------------------------------- per-frame data and leader-face selection
def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r}; use one of {SCHEMES}")


def per_frame_path(per_frame_dir: Path, video: int, scheme: str) -> Path:
    _check_scheme(scheme)
    return per_frame_dir / f"{video}-{scheme}.csv"


def read_frames(path: Path) -> pd.DataFrame:
    """One row per analysed frame with at least one face; fer's `box<k>, angry<k> ... neutral<k>` columns."""
    frames = pd.read_csv(path, index_col=0)
    if frames.empty:  # fer's (and face_emotion's) output for a video where no face was ever found
        return frames
    if "box0" not in frames.columns:
        raise ValueError(f"{path}: no 'box0' column; expected fer's Video.to_pandas layout (box0, angry0, ...)")
    return frames


def face_scores(frames: pd.DataFrame, face: int) -> pd.DataFrame:
    """(rows, 7) scores of one face index, columns EMOTIONS; NaN in rows where that index found no face."""
    columns = [f"{emotion}{face}" for emotion in EMOTIONS]
    missing = [column for column in columns if column not in frames.columns]
    if missing:
        faces = sum(column.startswith("box") for column in frames.columns)
        raise KeyError(f"face index {face} not in the frame table (missing {missing}); it has faces 0..{faces - 1}")
    scores = frames[columns]
    scores.columns = list(EMOTIONS)
    return scores


def needs_review(frames: pd.DataFrame, share: float = REVIEW_SHARE) -> bool:
    """True when a second face (box1) is present in more than `share` of the rows.

    The face index is the detector's order in each frame, not a tracked identity (digest 2.4), so a frequent
    second face means face 0 may not be the leader and a person has to choose.
    """
    return "box1" in frames.columns and bool(frames["box1"].notna().mean() > share)


def review_flags(per_frame_dir: Path, scheme: str) -> pd.Series:
    """Per video id with a per-frame CSV: whether the >5% second-face rule flags it for manual review."""
    _check_scheme(scheme)
    flags = {
        int(path.name.split("-")[0]): needs_review(read_frames(path)) for path in per_frame_dir.glob(f"*-{scheme}.csv")
    }
    return pd.Series(flags, name="needs_review").sort_index().rename_axis("video")


def leader_selection(data_dir: Path, scheme: str) -> pd.DataFrame:
    """Per video id: the leader's face index, whether the video is dropped, and the kept rows [row_from, row_to).

    The face comes from the manual marks (results/yt-urls-mark-manual-<scheme>.csv, 999 = unusable); drops and
    frame-range cuts come from the authors' review (results/manual_review.json). `row_to` is NaN for "to the end".
    """
    _check_scheme(scheme)
    marks = pd.read_csv(data_dir / "results" / f"yt-urls-mark-manual-{scheme}.csv", index_col=0)
    review = json.loads((data_dir / "results" / "manual_review.json").read_text())[scheme]
    selection = pd.DataFrame({"face": marks["Face"].astype(int)}).rename_axis("video")
    selection["dropped"] = (selection["face"] == DROPPED_FACE) | selection.index.isin(review["drop"])
    cuts = {int(video): rows for video, rows in review["cut"].items()}
    selection["row_from"] = [cuts.get(video, (0, None))[0] for video in selection.index]
    selection["row_to"] = [cuts.get(video, (0, np.nan))[1] for video in selection.index]
    return selection


def leader_frames(data_dir: Path, scheme: str, per_frame_dir: Path | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """(video id, the leader's (rows, 7) scores) for every kept video, after the manual frame-range cuts.

    `per_frame_dir` defaults to the released `<data_dir>/per_frame`; a face_emotion run's `data.output_dir`
    holds the same layout.
    """
    per_frame_dir = data_dir / "per_frame" if per_frame_dir is None else per_frame_dir
    for video, row in leader_selection(data_dir, scheme).iterrows():
        if row["dropped"]:
            continue
        path = per_frame_path(per_frame_dir, int(video), scheme)
        if not path.exists():
            raise FileNotFoundError(f"{path}: video {video} is not dropped in the manual review but has no CSV")
        stop = None if pd.isna(row["row_to"]) else int(row["row_to"])
        yield int(video), face_scores(read_frames(path).iloc[int(row["row_from"]) : stop], int(row["face"]))


# ---------------------------------------------------------------- per-video summaries
def video_means(scores: pd.DataFrame) -> pd.Series:
    """Mean of each emotion over the frames where the face was found, and the negative composite.

    Negative = the sum of the means of anger, disgust, fear and sadness (digest 2.5).
    """
    means = scores[list(EMOTIONS)].mean()  # skipna: frames where this face index is empty do not count
    means["negative"] = means[list(NEGATIVE)].sum()
    means["frames"] = scores[list(EMOTIONS)].notna().all(axis=1).sum()
    return means


def dominant_shares(scores: pd.DataFrame) -> pd.Series:
    """Share of frames where each emotion is the top score, and share whose four negative scores sum to >= 0.5."""
    found = scores[list(EMOTIONS)].dropna()
    top = found.idxmax(axis=1)  # a tie goes to the earlier emotion in fer's order
    shares = top.value_counts(normalize=True).reindex(list(EMOTIONS), fill_value=0.0)
    shares["negative"] = (found[list(NEGATIVE)].sum(axis=1) >= 0.5).mean()
    return shares


def summarise_videos(
    data_dir: Path,
    scheme: str,
    summary: Callable[[pd.DataFrame], pd.Series] = video_means,
    per_frame_dir: Path | None = None,
) -> pd.DataFrame:
    """One row per kept video (index `video`): `summary` of its leader's frame scores."""
    rows = {video: summary(scores) for video, scores in leader_frames(data_dir, scheme, per_frame_dir)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("video")


# ---------------------------------------------------------------- party codes
def populism_group(levels: pd.Series) -> pd.Series:
    """GPS Type_Populism 1-2 -> 'pluralist', 3-4 -> 'populist'; a missing level stays missing."""
    return levels.map({1: "pluralist", 2: "pluralist", 3: "populist", 4: "populist"})


def party_codes(data_dir: Path) -> pd.DataFrame:
    """Per video id: party, country and its party's GPS 2019 codes (NaN where the party has no GPS row).

    The URL sheet numbers D66's videos D66..D70 (an auto-increment slip, digest section 4): four Dutch videos
    find no GPS row and lose their codes, exactly as in the paper (207 -> 203 videos for t300).
    """
    urls = pd.read_csv(data_dir / "raw" / "yt-urls.csv")
    # keep_default_na=False: only the survey's own '#NULL!' (and empty cells) mean missing, not e.g. a party 'NA'
    gps = pd.read_csv(data_dir / "raw" / "gps.csv", na_values=["#NULL!", ""], keep_default_na=False)
    gps = gps[gps["CPARTYABB"].isin(urls["party"])]
    codes = (
        urls[["party"]]
        .merge(gps, how="left", left_on="party", right_on="CPARTYABB", validate="many_to_one")
        .rename(
            columns={
                "Type_Populism": "populism",
                "Type_Values": "values",
                "Type_Populist_Values": "populist_values",
                "Type_Partysize_vote": "party_size_vote",
                "Type_Partysize_seat": "party_size_seat",
            }
        )
    )
    codes["country"] = codes["party"].str.split("_").str[0]
    codes["group"] = populism_group(codes["populism"])
    columns = ["party", "country", "populism", "group", "values", "populist_values", "party_size_vote"]
    return codes[[*columns, "party_size_seat"]].rename_axis("video")


def load_videos(data_dir: Path, scheme: str, per_frame_dir: Path | None = None) -> pd.DataFrame:
    """Per-video mean scores of the kept videos joined with their party's GPS codes."""
    return summarise_videos(data_dir, scheme, per_frame_dir=per_frame_dir).join(party_codes(data_dir), how="left")


# ---------------------------------------------------------------- statistics
def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """(mean a - mean b) / pooled SD, pooled = sqrt(((n1-1)s1^2 + (n2-1)s2^2) / (n1+n2-2)) (digest 2.6)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    return float((a.mean() - b.mean()) / pooled)


def welch_comparison(a: ArrayLike, b: ArrayLike) -> pd.Series:
    """Means, SDs, sizes, Welch t (unequal variances), its df and p, and Cohen's d of a - b."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    welch = stats.ttest_ind(a, b, equal_var=False)
    return pd.Series(
        {
            "mean_a": a.mean(),
            "sd_a": a.std(ddof=1),
            "n_a": len(a),
            "mean_b": b.mean(),
            "sd_b": b.std(ddof=1),
            "n_b": len(b),
            "t": welch.statistic,
            "df": welch.df,
            "p": welch.pvalue,
            "cohen_d": cohens_d(a, b),
        }
    )


def anova_eta_squared(groups: Sequence[ArrayLike]) -> pd.Series:
    """One-way ANOVA: F, its degrees of freedom, p, and eta^2 = SS_between / (SS_between + SS_residual).

    With a single factor the Type-II sums of squares the authors took from OLS are the plain one-way ones.
    """
    arrays = [np.asarray(group, dtype=float) for group in groups]
    anova = stats.f_oneway(*arrays)
    grand = np.concatenate(arrays).mean()
    ss_between = sum(len(x) * (x.mean() - grand) ** 2 for x in arrays)
    ss_residual = sum(((x - x.mean()) ** 2).sum() for x in arrays)
    return pd.Series(
        {
            "F": anova.statistic,
            "df_between": len(arrays) - 1,
            "df_residual": sum(len(x) for x in arrays) - len(arrays),
            "p": anova.pvalue,
            "eta_sq": ss_between / (ss_between + ss_residual),
        }
    )


def tukey_pvalues(groups: Mapping[str, ArrayLike]) -> pd.DataFrame:
    """Tukey HSD p-value for every pair of groups: columns group_a, group_b, p."""
    labels = list(groups)
    result = stats.tukey_hsd(*[np.asarray(groups[label], dtype=float) for label in labels])
    pairs = [(labels[i], labels[j], result.pvalue[i, j]) for i, j in combinations(range(len(labels)), 2)]
    return pd.DataFrame(pairs, columns=["group_a", "group_b", "p"])


# ---------------------------------------------------------------- the paper's tables
def headline_table(videos: pd.DataFrame, scores: Sequence[str] = HEADLINE_SCORES) -> pd.DataFrame:
    """Pluralist vs populist per score: means, SDs, n, Welch t, df, p and Cohen's d (pluralist - populist).

    Videos without a GPS code (group missing) are left out, as in the paper.
    """
    pluralist = videos[videos["group"] == "pluralist"]
    populist = videos[videos["group"] == "populist"]
    rows = {score: welch_comparison(pluralist[score], populist[score]) for score in scores}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("score")
    table = table.astype({"n_a": int, "n_b": int})
    suffixes = {"_a": "_pluralist", "_b": "_populist"}
    return table.rename(columns=lambda c: c[:-2] + suffixes[c[-2:]] if c[-2:] in suffixes else c)


def _by_level(videos: pd.DataFrame, score: str) -> dict[str, pd.Series]:
    return {str(level): videos.loc[videos["populism"] == level, score] for level in GPS_LEVELS}


def level_table(videos: pd.DataFrame, scores: Sequence[str] = LEVEL_SCORES) -> pd.DataFrame:
    """Per score: the mean at each GPS populism level, and the one-way ANOVA over the four levels."""
    rows = {}
    for score in scores:
        groups = _by_level(videos, score)
        means = pd.Series({f"mean_{level}": values.mean() for level, values in groups.items()})
        rows[score] = pd.concat([means, anova_eta_squared(list(groups.values()))])
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("score")
    return table.astype({"df_between": int, "df_residual": int})


def level_tukey(videos: pd.DataFrame, score: str) -> pd.DataFrame:
    """Tukey HSD p-values between the four GPS populism levels for one score."""
    return tukey_pvalues(_by_level(videos, score))


def dominant_table(shares: pd.DataFrame, codes: pd.DataFrame) -> pd.DataFrame:
    """Mean per-video dominant-emotion shares for pluralist and populist videos (rows: share, columns: group)."""
    joined = shares.join(codes["group"], how="left").dropna(subset=["group"])
    return joined.groupby("group")[[*EMOTIONS, "negative"]].mean().T


# ---------------------------------------------------------------- report
def _markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table; pandas' to_markdown needs tabulate, which the platform does not install."""

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return f"{value:.2e}" if value != 0 and abs(value) < 10**-digits else f"{value:.{digits}f}"
        return str(value)

    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # itertuples, unlike iterrows, keeps each column's dtype, so counts print as integers
    lines += ["| " + " | ".join([str(index), *map(cell, values)]) + " |" for index, *values in table.itertuples()]
    return "\n".join(lines)


def _write_figure(videos: pd.DataFrame, path: Path) -> None:
    """Box plots of the negative and neutral scores by GPS populism level."""
    import matplotlib  # imported here: only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for axis, score in zip(axes, ("negative", "neutral")):
        axis.boxplot([values.to_numpy() for values in _by_level(videos, score).values()])
        axis.set_xticks(range(1, len(GPS_LEVELS) + 1))
        axis.set_xticklabels([str(level) for level in GPS_LEVELS])
        axis.set_xlabel("GPS Type_Populism")
        axis.set_title(f"{score} score per video")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report_markdown(videos: pd.DataFrame, shares: pd.DataFrame, scheme: str, figure: str, flagged: pd.Series) -> str:
    """The markdown report: sample, review flags, pluralist vs populist, ANOVA by level with Tukey, dominant
    emotions; `flagged` is review_flags' per-video result."""
    coded = videos.dropna(subset=["populism"])
    counts = coded["populism"].value_counts().reindex(GPS_LEVELS, fill_value=0)
    tukey = []
    for score in LEVEL_SCORES:
        pairs = level_tukey(videos, score)
        significant = pairs[pairs["p"] < 0.05]
        listed = ", ".join(f"{a}-{b} (p={p:.2g})" for a, b, p in significant.itertuples(index=False))
        tukey.append(f"- {score}: {listed or 'none'}")
    sections = [
        f"# Face of Populism: emotion scores of party leaders ({scheme})",
        f"{len(videos)} processed videos, {len(coded)} with a GPS populism code; by level 1/2/3/4: "
        + " / ".join(str(n) for n in counts)
        + f" ({counts[1] + counts[2]} pluralist, {counts[3] + counts[4]} populist).",
        f"{int(flagged.sum())} of {len(flagged)} per-frame files show a second face in more than "
        f"{REVIEW_SHARE:.0%} of rows, the paper's trigger for a manual choice of the leader's face.",
        "## Pluralist vs populist (Welch t-test, Cohen's d = pluralist - populist, pooled SD)",
        _markdown(headline_table(videos)),
        "## By GPS populism level (one-way ANOVA, eta squared)",
        _markdown(level_table(videos)),
        "Tukey HSD pairs with p < 0.05:",
        "\n".join(tukey),
        "## Dominant emotion: mean share of a video's frames",
        _markdown(dominant_table(shares, videos)),
        "## Overall descriptives (all processed videos)",
        _markdown(videos[[*EMOTIONS, "negative"]].describe().rename_axis("")),
    ]
    sections.append(f"![negative and neutral scores by GPS level]({figure})")
    return "\n\n".join(sections) + "\n"


def write_report(videos: pd.DataFrame, shares: pd.DataFrame, scheme: str, out: Path, flagged: pd.Series) -> Path:
    """Write the markdown report to `out`, with its figure beside it."""
    figure = f"{out.stem}-by-level.png"
    _write_figure(videos, out.parent / figure)
    out.write_text(report_markdown(videos, shares, scheme, figure, flagged))
    return out
