"""`method: gan_fingerprint_verify`: the trusted third party's check of suspect generators (a job, no Trainer).

    python train.py --config configs/gan_fingerprint_verify.yaml data.evidence=<owner run>/export \
        'data.suspects=[<a gan_fingerprint_gan export dir>,suspect.ts]' [data.independents=[...]] [model.alpha=1e-6]

[P: a TTP verifies with the owner's committed evidence; R: every concrete step below]
1. The evidence (`fingerprints.pt`: X, Y; C* rebuilt from `model.pt` + `export_meta.yaml`) is hashed again and
   compared with the lodged `registration.json`: substituted or tampered evidence stops the job in one line.
2. p0: pooled over `data.independents` (held-out independent generators the verifier trusts) with a
   Clopper-Pearson interval, else `model.p0`, else the owner's estimate recorded at registration; the threshold
   uses the interval's upper end (conservative), tau = k / N with k the smallest count of p-value <= alpha.
3. Each suspect answers the N queries through the generator hook (eval mode, latent layouts, output shape and
   NaN checked): r = matches / N, p-value = P[Binomial(N, p0) >= matches], decision r >= tau.

A suspect is a tenfold export folder (`export_meta.yaml` + `model.pt`, e.g. a `gan_fingerprint_gan` run), a
`torch.export` program (`.pt2`, batch dimension dynamic) or a TorchScript file: none is unpickled as code.
Writes `verify.json`; logs r, p-value and the decision per suspect, tau and p0, a W&B table, a bar chart of r
against tau, and each suspect's answers to the first fingerprint queries with C*'s labels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from scipy.stats import binom
from torch import Tensor, nn

from lightning_modules.gan_fingerprint import commitment, verification
from lightning_modules.gan_fingerprint.errors import VerificationError
from lightning_modules.gan_fingerprint.generator_files import generator_name, load_generator
from lightning_modules.gan_fingerprint.hook import GeneratorHook, InputKind
from tenfold.checkpoint_io import load_weights_only
from tenfold.config import JobConfig, LoggerKind
from tenfold.errors import ConfigError, TenfoldError
from tenfold.export import load_export
from tenfold.media import figure_image, has_media_logger, log_image, log_image_grid, pyplot
from tenfold.registry import register_job
from tenfold.run_dir import RunDir

SAMPLES_SHOWN = 16  # answers per suspect in its picture


@dataclass
class VerifyData:
    # The owner's evidence: a gan_fingerprint run's export/ (fingerprints.pt, model.pt, export_meta.yaml).
    evidence: str | None = None
    # The commitment lodged at registration; None: <evidence>/registration.json.
    registration: str | None = None
    suspects: list[str] = field(default_factory=list)  # generator files/folders to verify
    independents: list[str] = field(default_factory=list)  # held-out independent generators: p0 (optional)


@dataclass
class VerifyModel:
    alpha: float = 1e-6
    p0: float | None = None  # None: from data.independents, else the owner's registration
    ci_level: float = 0.95


@dataclass
class VerifyJobConfig(JobConfig):
    method: str = "gan_fingerprint_verify"
    logger: LoggerKind = LoggerKind.csv
    model: VerifyModel = field(default_factory=VerifyModel)
    data: VerifyData = field(default_factory=VerifyData)


@dataclass(frozen=True)
class Evidence:
    x: Tensor  # (N, d) latents or (N, C, H, W) images
    y: Tensor  # (N,) secret labels
    classifier: nn.Module  # C*
    registration: dict


def load_evidence(data: VerifyData) -> Evidence:
    """X, Y and C* from the owner's export, checked against the lodged commitment."""
    if not data.evidence:
        raise ConfigError(
            "data.evidence is not set: point it at the owner's gan_fingerprint export folder "
            "(<run dir>/export, holding fingerprints.pt, model.pt and registration.json)"
        )
    folder = Path(data.evidence)
    reg_path = Path(data.registration) if data.registration else folder / "registration.json"
    for path, key in ((folder / "fingerprints.pt", "data.evidence"), (reg_path, "data.registration")):
        if not path.is_file():
            raise ConfigError(f"{key}: {path} does not exist (expected a gan_fingerprint export folder)")
    registration = json.loads(reg_path.read_text())
    fp = load_weights_only(folder / "fingerprints.pt")
    classifier, _ = load_export(folder)
    lodged = commitment.Commitment(
        registration["digest"], registration["generator_hash"], registration["nonce"], registration["timestamp"]
    )
    commitment.check_commitment(lodged, fp["x"], fp["y"], classifier)
    with torch.no_grad():
        classes = classifier.eval()(torch.zeros(1, *registration["output_shape"])).shape[1]
    if classes != registration["num_classes"]:
        raise VerificationError(
            f"the classifier in {folder} has {classes} classes, the registration says {registration['num_classes']}: "
            "not the registered classifier"
        )
    return Evidence(fp["x"], fp["y"], classifier.eval(), registration)


def query(evidence: Evidence, generator: nn.Module, name: str) -> tuple[int, Tensor, Tensor]:
    """(matches, the suspect's answers G~(x_i), C*'s labels of them)."""
    reg = evidence.registration
    hook = GeneratorHook(generator, tuple(reg["output_shape"]), InputKind(reg["input"]), name)
    with torch.no_grad():
        answers = hook(evidence.x)
        matches = verification.match_count(evidence.classifier, answers, evidence.y)
        labels = evidence.classifier(answers).argmax(1)
    return matches, answers, labels


def choose_p0(cfg: VerifyJobConfig, evidence: Evidence, independents: dict[str, int]) -> dict:
    n = len(evidence.y)
    if independents:
        est = verification.estimate_p0(sum(independents.values()), n * len(independents), cfg.model.ci_level)
        return {
            "source": f"data.independents ({len(independents)})",
            "value": est.value,
            "low": est.low,
            "high": est.high,
            "used": est.high,
        }
    if cfg.model.p0 is not None:
        return {"source": "model.p0", "value": cfg.model.p0, "used": cfg.model.p0}
    owner = evidence.registration.get("p0")
    if owner is None:
        raise ConfigError(
            "no p0: set model.p0, or data.independents=[...] (held-out independent generators); "
            "this registration records no p0 of its own"
        )
    return {"source": "registration (the owner's held-out independents)", **owner}


def verify(cfg: VerifyJobConfig) -> tuple[dict, dict[str, tuple[Tensor, Tensor]], Evidence]:
    """The report (p0, tau, one row per suspect), each suspect's first answers with C*'s labels, the evidence."""
    if not cfg.data.suspects:
        raise ConfigError(
            "data.suspects is empty: list the suspect generators (tenfold export folders or "
            "TorchScript files), e.g. 'data.suspects=[/path/suspect.ts]'"
        )
    evidence = load_evidence(cfg.data)
    n = len(evidence.y)
    independents = {}
    for i, path in enumerate(cfg.data.independents):
        name = generator_name(path)
        independents[name] = query(evidence, load_generator(path, f"data.independents[{i}]"), name)[0]
    p0 = choose_p0(cfg, evidence, independents)
    k = verification.binomial_threshold(n, p0["used"], cfg.model.alpha)
    rows, shown = [], {}
    for i, path in enumerate(cfg.data.suspects):
        name = generator_name(path)
        matches, answers, labels = query(evidence, load_generator(path, f"data.suspects[{i}]"), name)
        rows.append(
            {
                "name": name,
                "path": path,
                "matches": matches,
                "r": matches / n,
                "p_value": float(binom.sf(matches - 1, n, p0["used"])),
                "derived": matches >= k,
            }
        )
        shown[name] = (answers[:SAMPLES_SHOWN], labels[:SAMPLES_SHOWN])
    report = {
        "n": n,
        "alpha": cfg.model.alpha,
        "p0": p0,
        "threshold_matches": k,
        "tau": k / n,
        "independents": {name: m / n for name, m in independents.items()},
        "commitment": evidence.registration["digest"],
        "suspects": rows,
    }
    return report, shown, evidence


def _bar_chart(report: dict) -> Any:
    plt = pyplot()
    rows = report["suspects"]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.2))
    ax.bar(range(len(rows)), [r["r"] for r in rows], color=["tab:red" if r["derived"] else "tab:grey" for r in rows])
    ax.axhline(report["tau"], color="black", ls=":", label=f"tau={report['tau']:.2f} (alpha={report['alpha']:g})")
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("match rate r")
    ax.legend(fontsize=7)
    return figure_image(fig)


def _log(loggers: list[Logger], report: dict, shown: dict, y: Tensor) -> dict[str, float]:
    metrics = {"verify/tau": report["tau"], "verify/p0_used": report["p0"]["used"]}
    for row in report["suspects"]:
        for key in ("r", "p_value", "derived"):
            metrics[f"verify/{key}/{row['name']}"] = float(row[key])
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        if hasattr(logger, "log_table"):  # W&B: one row per suspect
            columns = ["name", "matches", "r", "tau", "p_value", "derived"]
            data = [
                [r["name"], r["matches"], r["r"], report["tau"], r["p_value"], r["derived"]] for r in report["suspects"]
            ]
            logger.log_table("verify/suspects", columns=columns, data=data, step=0)
    if has_media_logger(loggers):
        log_image(loggers, "verify/r_by_suspect", _bar_chart(report), 0)
        for name, (answers, labels) in shown.items():
            if answers.dim() == 4:
                captions = [f"y={int(t)} C*={int(p)}" for t, p in zip(y, labels)]
                log_image_grid(loggers, f"verify/answers/{name}", list((answers.clamp(-1, 1) + 1) / 2), 0, captions)
    return metrics


@register_job("gan_fingerprint_verify", config=VerifyJobConfig)
def run_verify(cfg: VerifyJobConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, float]:
    try:
        report, shown, evidence = verify(cfg)
    except (KeyError, TypeError) as exc:  # a registration.json without the fields this job reads
        raise TenfoldError(f"registration: missing or malformed field {exc}") from None
    (run_dir.path / "verify.json").write_text(json.dumps(report, indent=1))
    for row in report["suspects"]:
        rank_zero_info(
            f"{row['name']}: r={row['r']:.2f} ({row['matches']}/{report['n']}) p={row['p_value']:.3g} "
            f"-> {'DERIVED from the registered generator' if row['derived'] else 'not shown derived'}"
        )
    p0 = report["p0"]
    rank_zero_info(f"tau={report['tau']:.2f} at alpha={report['alpha']:g}, p0={p0['used']:.3f} from {p0['source']}")
    metrics = _log(loggers, report, shown, evidence.y)
    return {k: v for k, v in metrics.items() if not math.isnan(v)}
