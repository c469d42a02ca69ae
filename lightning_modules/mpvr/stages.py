"""MPVR's two LLM stages (digest §2.2-2.3, notes §1.2).

Stage 1: a meta-prompt (fixed system prompt + a DTD in-context example + the target dataset's name and
description) asks for N query templates with a `<class name>` slot; `parse_queries` reads whatever shape
the answer comes in. Stage 2: every query is filled with every class name and asked n times; the answers,
cleaned, are the class's descriptions. The official scripts hard-code stage 1's output and never ship the
call; here both stages go through the same cached LLM.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.mpvr.cache import LLMCache
from lightning_modules.mpvr.config import CleanMode, DescriptionsConfig, GenerateConfig, LLMConfig, QueriesConfig
from lightning_modules.mpvr.llm import LLM, LLMError

PLACEHOLDER = "<class name>"

# The system prompt, verbatim from the paper's meta-prompt figure (notes §1.2); N is filled in.
SYSTEM_PROMPT = (
    "You are provided with prompt template examples for a dataset, which are provided to the LLM to generate "
    "descriptions for the categories in these datasets. Your task is to generate {n} diverse prompts for another "
    "dataset for which you are also provided the dataset name and the description. Format it correctly for use in "
    "a Python script, and do not repeat the prompts."
)
IN_CONTEXT = {
    "dtd": ("Describable Textures Dataset (DTD)",
            "The (DTD) is an evolving collection of textural images in the wild, annotated with a series of "
            "human-centric attributes, inspired by the perceptual properties of textures.",
            ("Describe how does the <class name> texture looks like",
             "How can you recognize the texture of <class name>?",
             "What does the texture of <class name> look like?")),
    # Used when the target is DTD itself (digest §2.2 (S)).
    "eurosat": ("EuroSAT",
                "EuroSAT is a dataset of Sentinel-2 satellite images covering 10 land use and land cover classes.",
                ("Describe how a <class name> looks in a satellite photo",
                 "How can you identify <class name> from above?",
                 "What does <class name> look like from a satellite?")),
}
# Official stage-2 max_tokens: 50, and 40 for these datasets.
SHORT_COMPLETION_DATASETS = ("eurosat", "food101")


def meta_prompt(cfg: QueriesConfig) -> tuple[str, str]:
    """(system prompt, user prompt) of stage 1 for the target dataset."""
    example = "eurosat" if "dtd" in cfg.dataset_name.lower() or "texture" in cfg.dataset_name.lower() else "dtd"
    name, description, prompts = IN_CONTEXT[example]
    lines = "\n".join(f'prompts.append("{p}")' for p in prompts)
    user = (f"Dataset Name: {name}\nDescription: {description}\nPrompts:\n{lines}\n\n"
            f"Dataset Name: {cfg.dataset_name}\nDescription: {cfg.description}\nPrompts:\n")
    return SYSTEM_PROMPT.format(n=cfg.num_queries), user


# ---- stage-1 answer parsing

_APPEND = re.compile(r"""prompts\.append\(\s*(?P<q>["'])(?P<text>.*?)(?P=q)\s*\)""")
_QUOTED = re.compile(r'"([^"\n]{4,})"|\u201c([^\u201d\n]{4,})\u201d')
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+")
# Placeholder spellings LLMs use, all normalised to <class name>.
_PLACEHOLDERS = re.compile(r"<\s*class[\s_-]*name\s*>|\{\s*(?:class[\s_-]*name|category|c)?\s*\}"
                           r"|\[\s*class[\s_-]*name\s*\]|<\s*category\s*>", re.IGNORECASE)


@dataclass
class ParsedQueries:
    queries: list[str]
    shortfall: int  # how many fewer than requested (0 when N or more were found)
    dropped: int  # candidate lines without a placeholder, or duplicates


def parse_queries(answer: str, n: int) -> ParsedQueries:
    """Query templates from a stage-1 answer: `prompts.append("...")` lines, numbered/bulleted lists,
    code fences, quoted strings; every placeholder variant becomes `<class name>`; deduplicated, first N."""
    text = answer.replace("```python", "\n").replace("```", "\n")
    candidates = [m.group("text") for m in _APPEND.finditer(text)]
    if not candidates:
        for line in text.splitlines():
            line = _LIST_MARK.sub("", line).strip()
            quoted = [a or b for a, b in _QUOTED.findall(line)]
            candidates.extend(quoted if quoted else [line])
    seen: set[str] = set()
    queries: list[str] = []
    dropped = 0
    for raw in candidates:
        query = _PLACEHOLDERS.sub(PLACEHOLDER, raw.replace('\\"', '"').replace("\\'", "'")).strip().strip(",").strip()
        if PLACEHOLDER not in query or query.lower() in seen:
            dropped += 1 if query else 0
            continue
        seen.add(query.lower())
        queries.append(query)
    return ParsedQueries(queries[:n], max(0, n - len(queries)), dropped)


# ---- stage 2: fill and clean


def fill_query(query: str, class_name: str) -> str:
    """The class name (underscores as spaces) in the slot; "a <class name>" becomes "an ..." before a vowel."""
    name = class_name.replace("_", " ")
    article = "an" if name[:1].lower() in "aeiou" else "a"

    def fix(match: re.Match) -> str:
        return (article.capitalize() if match.group(1)[0] == "A" else article) + " " + PLACEHOLDER

    return re.sub(r"\b(an|a|An|A)\s+<class name>", fix, query).replace(PLACEHOLDER, name)


def clean_description(text: str, mode: CleanMode) -> str | None:
    """One completion as a prompt; None drops it (only in `sentences` mode)."""
    if mode is CleanMode.official:
        return text.replace("\n\n", "") + "."
    text = " ".join(text.split())
    if "." in text and not text.endswith((".", "!", "?")):
        text = text[: text.rfind(".") + 1]  # cut a completion truncated at the token limit
    return text or None


def completion_length(cfg: DescriptionsConfig, dataset_name: str) -> int:
    if cfg.completion_length is not None:
        return cfg.completion_length
    return 40 if dataset_name.lower().replace("-", "").replace(" ", "") in SHORT_COMPLETION_DATASETS else 50


# ---- the stages


def run_queries(llm: LLM, cfg: QueriesConfig) -> ParsedQueries:
    system, user = meta_prompt(cfg)
    answer = llm.complete(user, n=1, temperature=cfg.temperature, max_tokens=cfg.completion_length, system=system)
    parsed = parse_queries(answer[0] if answer else "", cfg.num_queries)
    if len(parsed.queries) < max(1, cfg.min_queries):
        preview = " ".join((answer[0] if answer else "").split())[:80]
        raise LLMError(f"stage 1: no usable query template with a {PLACEHOLDER} slot in the LLM's answer "
                       f"({len(parsed.queries)} found, queries.min_queries={cfg.min_queries}); answer began: "
                       f"{preview!r}")
    return parsed


def run_descriptions(llm: LLM, queries: Sequence[str], class_names: Sequence[str], cfg: DescriptionsConfig,
                     dataset_name: str) -> dict[str, dict[str, list[str]]]:
    """`{class: {query: [cleaned texts]}}` (the official stage-2 format), one n-call per (class, query)."""
    length = completion_length(cfg, dataset_name)
    jobs = [(name, query) for name in class_names for query in queries]

    def ask(job: tuple[str, str]) -> list[str]:
        return llm.complete(fill_query(job[1], job[0]), n=cfg.n, temperature=cfg.temperature, max_tokens=length)

    with ThreadPoolExecutor(max_workers=max(1, llm.cfg.concurrency)) as pool:
        answers = list(pool.map(ask, jobs))
    nested: dict[str, dict[str, list[str]]] = {name: {} for name in class_names}
    for (name, query), texts in zip(jobs, answers):
        cleaned = [c for c in (clean_description(t, cfg.clean) for t in texts) if c]
        nested[name][query] = cleaned
    return nested


def queries_file_payload(parsed: ParsedQueries, cfg: QueriesConfig) -> str:
    return json.dumps({"dataset": cfg.dataset_name, "queries": parsed.queries, "requested": cfg.num_queries,
                       "shortfall": parsed.shortfall, "dropped": parsed.dropped}, indent=1, ensure_ascii=False)


# ---- one LLM session for both stages


def cache_directory(cfg: LLMConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tenfold" / "mpvr_llm"


@contextmanager
def llm_session(cfg: LLMConfig, cache_only: bool | None = None) -> Iterator[LLM]:
    """An LLM over the cache; with `llm.serve_stub` the loopback stub runs for the session (not when
    every answer must come from the cache)."""
    cache = LLMCache(cache_directory(cfg), cfg.cache_only if cache_only is None else cache_only)
    if cfg.serve_stub and not cache.cache_only:
        from lightning_modules.mpvr.stub_server import LoopbackLLM
        from lightning_modules.mpvr.world import KNOWLEDGE

        with LoopbackLLM(KNOWLEDGE) as server:
            yield LLM(cfg, cache, base_url=server.base_url)
    else:
        yield LLM(cfg, cache)


def generate_bank(cfg: GenerateConfig, class_names: Sequence[str], cache_only: bool | None = None
                  ) -> tuple[dict[str, dict[str, list[str]]], dict[str, float]]:
    """Stage 1 then stage 2 for `class_names`: the nested bank and the run's counts."""
    with llm_session(cfg.llm, cache_only) as llm:
        parsed = run_queries(llm, cfg.queries)
        nested = run_descriptions(llm, parsed.queries, class_names, cfg.descriptions, cfg.queries.dataset_name)
    counts = {"llm_calls": llm.calls, **llm.cache.counts(), "queries": len(parsed.queries),
              "queries_shortfall": parsed.shortfall}
    return nested, counts
