"""Prompt banks: {class name: [prompt, ...]} read, validated, written, and summarised.

Two file formats are read and written:
  * flat   `{class: [texts]}` -- what the official loader reads and what the released banks are;
  * nested `{class: {query: [texts]}}` -- what the official stage-2 scripts write (flattened in query order).
Classes are always looked up by the dataset's class names (through an optional name map such as CoOp's
EuroSAT names), never by the JSON key order, and every dataset class must be in the bank.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from tenfold.checkpoint_io import atomic_write
from tenfold.errors import DataError

log = logging.getLogger("tenfold")

Bank = dict[str, list[str]]
NestedBank = dict[str, dict[str, list[str]]]

# S-TEMP: CLIP's single template.
S_TEMP = ("a photo of a {}.",)
# DS-TEMP: CLIP's dataset-specific template lists (counts as in the official utils/templates.py).
EUROSAT_TEMPLATES = ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                     "a centered satellite photo of the {}.")
DTD_TEMPLATES = ("a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing.",
                 "a photo of a {} object.", "a photo of the {} texture.", "a photo of the {} pattern.",
                 "a photo of the {} thing.", "a photo of the {} object.")
# The demo world's "dataset-specific" templates: its style (shapes on a background), no class knowledge.
WORLD_TEMPLATES = ("a photo of a {}.", "a picture of the {}.", "a {} on a black background.",
                   "a {} on a grey background.", "an image of a {}.", "a small {}.", "a large {}.")


def imagenet_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet templates (also the official CIFAR-10 DS-TEMP list), from open_clip."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def template_bank(templates: Sequence[str], class_names: Sequence[str]) -> Bank:
    """A bank that fills each template with each class name (S-TEMP / DS-TEMP through the same path)."""
    return {name: [t.format(name) for t in templates] for name in class_names}


def flatten_nested(nested: Mapping[str, Mapping[str, Sequence[str]]]) -> Bank:
    """The official stage-2 output `{class: {query: [texts]}}` -> `{class: [texts]}` (query order kept)."""
    return {name: [text for texts in queries.values() for text in texts] for name, queries in nested.items()}


def read_bank_file(path: str | Path, key: str = "bank path") -> Bank:
    """A flat or nested bank file as a flat bank, or one DataError naming `key` and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: prompt bank file not found: {path} (point it at a JSON file of "
                        "{class name: [prompt, ...]}, e.g. the released descriptions/gpt/<Dataset>.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {path} is not valid JSON ({exc}); expected {{class name: [prompt, ...]}}") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{key}: {path} must hold a non-empty JSON object {{class name: [prompt, ...]}}")
    bank: Bank = {}
    for name, value in raw.items():
        if isinstance(value, dict):  # nested {query: [texts]}
            value = [text for texts in value.values() for text in (texts if isinstance(texts, list) else [texts])]
        if not isinstance(value, list):
            raise DataError(f"{key}: {path}: class '{name}' maps to a {type(value).__name__}, expected a list "
                            "of prompt strings")
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise DataError(f"{key}: {path}: class '{name}' has {len(bad)} non-string entries (first: {bad[0]!r}); "
                            "every prompt must be a string")
        bank[name] = value
    return bank


def align_bank(bank: Mapping[str, Sequence[str]], class_names: Sequence[str], name_map: Mapping[str, str] | None = None,
               source: str = "bank") -> Bank:
    """The bank restricted to, and ordered by, the dataset's classes; one DataError for any mismatch.

    `name_map` maps a dataset class name to the name the bank uses (CoOp's EuroSAT `NEW_CNAMES`).
    """
    name_map = dict(name_map or {})
    if len(set(class_names)) != len(class_names) or any(not str(n).strip() for n in class_names):
        dupes = sorted({n for n in class_names if list(class_names).count(n) > 1})
        raise DataError(f"{source}: the dataset's class names must be unique and non-empty (duplicates: {dupes})")
    wanted = {name: name_map.get(name, name) for name in class_names}
    missing = [name for name, key in wanted.items() if key not in bank]
    if missing:
        raise DataError(f"{source}: {len(missing)} dataset class(es) missing from the bank: {missing[:5]}; "
                        "add them, or map dataset names to bank names with class_name_map")
    empty = [name for name, key in wanted.items() if not bank[key]]
    if empty:
        raise DataError(f"{source}: empty prompt list for class(es) {empty[:5]}; every class needs >= 1 prompt")
    extra = sorted(set(bank) - set(wanted.values()))
    if extra:
        log.warning("%s: %d bank class(es) not in the dataset, ignored: %s", source, len(extra), extra[:5])
    return {name: list(bank[key]) for name, key in wanted.items()}


def write_bank(path: str | Path, bank: Mapping[str, Sequence[str]] | NestedBank) -> Path:
    """Either format, atomically (temp file + rename), UTF-8 with the class names as written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(bank, ensure_ascii=False, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def bank_statistics(bank: Mapping[str, Sequence[str]], token_count, context_length: int = 77) -> list[dict]:
    """Per class: prompts, unique prompts, prompts over `context_length` tokens (truncated), mean tokens.

    `token_count(text)` counts BPE tokens including start/end (open_clip's tokenizer truncates at 77).
    """
    rows = []
    for name, prompts in bank.items():
        lengths = [token_count(p) for p in prompts]
        rows.append({"class": name, "prompts": len(prompts), "unique": len(set(prompts)),
                     "truncated": sum(n > context_length for n in lengths),
                     "mean_tokens": sum(lengths) / max(1, len(lengths)), "max_tokens": max(lengths, default=0)})
    return rows


def open_clip_token_count():
    """Token counter with open_clip's bundled BPE (+2 for start/end of text); no download."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text)) + 2
