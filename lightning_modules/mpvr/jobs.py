"""MPVR's two LLM stages as tenfold jobs (no Trainer; the same config handling, run directory and loggers).

    python train.py --config configs/mpvr_queries.yaml llm.base_url=http://localhost:8000/v1
    python train.py --config configs/mpvr_descriptions.yaml queries_file=<run>/queries.json class_names_file=...

`mpvr_queries` writes `<run dir>/queries.json` (the queries, the shortfall against N, dropped lines);
`mpvr_descriptions` writes `<run dir>/bank_nested.json` ({class: {query: [texts]}}, the official stage-2
format) and `<run dir>/bank.json` ({class: [texts]}, what `banks[].path` reads), plus bank statistics.
Both report LLM calls and cache hits/misses; a second run of either makes 0 calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.mpvr import banks
from lightning_modules.mpvr.config import DescriptionsJobConfig, QueriesJobConfig
from lightning_modules.mpvr.stages import llm_session, queries_file_payload, run_descriptions, run_queries
from tenfold.checkpoint_io import atomic_write
from tenfold.errors import ConfigError, DataError
from tenfold.registry import register_job
from tenfold.run_dir import RunDir


@register_job("mpvr_queries", config=QueriesJobConfig)
def make_queries(cfg: QueriesJobConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, float]:
    with llm_session(cfg.llm) as llm:
        parsed = run_queries(llm, cfg.queries)
    payload = queries_file_payload(parsed, cfg.queries)
    for path in [run_dir.path / "queries.json", *([Path(cfg.output)] if cfg.output else [])]:
        atomic_write(path, lambda tmp, text=payload: Path(tmp).write_text(text, encoding="utf-8"))
    metrics = {"queries/count": len(parsed.queries), "queries/shortfall": parsed.shortfall,
               "queries/dropped": parsed.dropped, "llm/calls": llm.calls,
               **{f"llm/{k}": v for k, v in llm.cache.counts().items()}}
    _log(loggers, metrics)
    rank_zero_info(f"stage 1: {len(parsed.queries)} queries (shortfall {parsed.shortfall}) -> "
                   f"{run_dir.path}/queries.json")
    return metrics


@register_job("mpvr_descriptions", config=DescriptionsJobConfig)
def make_descriptions(cfg: DescriptionsJobConfig, run_dir: RunDir, loggers: list[Logger]) -> dict[str, float]:
    class_names = _class_names(cfg)
    with llm_session(cfg.llm) as llm:
        queries = _queries(cfg) if cfg.queries_file else run_queries(llm, cfg.queries).queries
        nested = run_descriptions(llm, queries, class_names, cfg.descriptions, cfg.queries.dataset_name)
    flat = banks.flatten_nested(nested)
    banks.write_bank(run_dir.path / "bank_nested.json", nested)
    banks.write_bank(run_dir.path / "bank.json", flat)
    if cfg.output:
        banks.write_bank(cfg.output, flat)
    stats = banks.bank_statistics(flat, banks.open_clip_token_count())
    metrics = {"bank/classes": len(flat), "bank/prompts": sum(r["prompts"] for r in stats),
               "bank/unique": sum(r["unique"] for r in stats), "bank/truncated": sum(r["truncated"] for r in stats),
               "llm/calls": llm.calls, **{f"llm/{k}": v for k, v in llm.cache.counts().items()}}
    _log(loggers, metrics, stats)
    rank_zero_info(f"stage 2: {metrics['bank/prompts']} prompts for {len(flat)} classes, {llm.calls} LLM calls "
                   f"-> {run_dir.path}/bank.json")
    return metrics


def _class_names(cfg: DescriptionsJobConfig) -> list[str]:
    names = list(cfg.class_names)
    if cfg.class_names_file:
        path = Path(cfg.class_names_file)
        if not path.is_file():
            raise DataError(f"class_names_file: no such file {path} (one class name per line)")
        names += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ConfigError("no class names: set class_names=[...] or class_names_file=<text file, one per line>")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate class names: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def _queries(cfg: DescriptionsJobConfig) -> list[str]:
    path = Path(cfg.queries_file)
    try:
        queries = json.loads(path.read_text(encoding="utf-8"))["queries"]
    except FileNotFoundError:
        raise DataError(f"queries_file: no such file {path} (a stage-1 queries.json)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"queries_file: {path} is not a stage-1 queries.json ({exc})") from None
    if not queries or not all(isinstance(q, str) for q in queries):
        raise DataError(f"queries_file: {path} holds no query strings")
    return queries


def _log(loggers: list[Logger], metrics: dict[str, Any], table: list[dict] | None = None) -> None:
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        if isinstance(logger, WandbLogger) and table:
            logger.log_table("bank/statistics", columns=list(table[0]), data=[list(r.values()) for r in table])
