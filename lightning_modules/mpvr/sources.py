"""Every configured bank as {class name: [prompts]} for the dataset's classes: template sets (S-TEMP,
DS-TEMP), JSON files (the released banks), or MPVR's two LLM stages (cached)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning_modules.mpvr import banks
from lightning_modules.mpvr.config import BankConfig, BankKind, GenerateConfig, LLMBackend, TemplateSet
from lightning_modules.mpvr.stages import generate_bank
from tenfold.errors import ConfigError

# Relative bank paths are looked up here too: the released banks ship inside the method folder.
BUNDLED_BANKS = Path(__file__).resolve().parent / "banks"


def template_set(which: TemplateSet) -> tuple[str, ...]:
    return {TemplateSet.s_temp: banks.S_TEMP, TemplateSet.eurosat: banks.EUROSAT_TEMPLATES,
            TemplateSet.dtd: banks.DTD_TEMPLATES, TemplateSet.world: banks.WORLD_TEMPLATES}.get(
        which) or banks.imagenet_templates()


def check_bank_configs(configs: Sequence[BankConfig], ensembles: Mapping[str, list[str]], primary: str,
                       generate: GenerateConfig) -> None:
    names = [b.name for b in configs]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"banks: names must be unique and at least one bank is needed (got {names})")
    for i, b in enumerate(configs):
        if b.kind is BankKind.file and not b.path:
            raise ConfigError(f"banks[{i}] ({b.name}): kind=file needs banks[{i}].path (a JSON prompt bank)")
        if b.kind is BankKind.templates and b.templates is None:
            raise ConfigError(f"banks[{i}] ({b.name}): kind=templates needs banks[{i}].templates "
                              f"(one of {', '.join(t.value for t in TemplateSet)})")
    for name, members in ensembles.items():
        unknown = sorted(set(members) - set(names))
        if unknown or not members or name in names:
            raise ConfigError(f"ensembles ({name}): members must be configured bank names (unknown: {unknown}) and "
                              "the ensemble name must differ from every bank's")
    llm = generate.llm
    if any(b.kind is BankKind.generate for b in configs) and not (
            llm.base_url or llm.serve_stub or llm.cache_only or llm.backend is LLMBackend.transformers):
        raise ConfigError("generate.llm.base_url is not set: point it at an OpenAI-compatible endpoint (e.g. "
                          "https://api.openai.com/v1, or http://localhost:8000/v1 for vLLM), or set "
                          "generate.llm.cache_only=true to use cached answers only")
    if primary not in names and primary not in ensembles:
        raise ConfigError(f"primary={primary!r} is neither a bank ({', '.join(names)}) nor an ensemble")


def bank_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() or not (BUNDLED_BANKS / p).exists() else BUNDLED_BANKS / p


def resolve_bank(index: int, cfg: BankConfig, class_names: Sequence[str], generate: GenerateConfig,
                 cache_only: bool | None = None, counts: dict | None = None) -> banks.Bank:
    source = f"banks[{index}] ({cfg.name})"
    if cfg.kind is BankKind.templates:
        return banks.template_bank(template_set(cfg.templates), class_names)
    if cfg.kind is BankKind.file:
        raw = banks.read_bank_file(bank_path(cfg.path), key=f"banks[{index}].path")
        return banks.align_bank(raw, class_names, cfg.class_name_map, source)
    wanted = [cfg.class_name_map.get(n, n) for n in class_names]
    nested, run_counts = generate_bank(generate, wanted, cache_only)
    if counts is not None:
        counts.update(run_counts)
    return banks.align_bank(banks.flatten_nested(nested), class_names, cfg.class_name_map, source)
