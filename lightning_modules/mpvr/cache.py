"""A content-addressed cache of LLM answers: a crash loses no call, a second run makes none.

The key is the sha256 of the canonical JSON of everything that determines the answer's distribution:
backend, model, endpoint kind, the full prompt or messages, temperature, top_p, max_tokens, n, seed,
stop. One file per entry, `<dir>/<k[:2]>/<k>.json`, written to a temp name and renamed (a reader sees a
complete entry or none). An unreadable entry is moved to `<dir>/quarantine/` and counts as a miss; in
`cache_only` mode any miss is an error (the CI / reproduction mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from tenfold.errors import DataError

log = logging.getLogger("tenfold")


def cache_key(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class LLMCache:
    def __init__(self, directory: str | Path, cache_only: bool = False) -> None:
        self.dir = Path(directory)
        self.cache_only = cache_only
        self.hits = self.misses = self.quarantined = 0
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, request: dict[str, Any]) -> list[str] | None:
        """The cached choices of `request`, or None (a miss; an error in cache_only mode)."""
        key = cache_key(request)
        path = self.path(key)
        choices = self._read(path, key)
        with self._lock:
            if choices is not None:
                self.hits += 1
                return choices
            self.misses += 1
        if self.cache_only:
            raise DataError(f"llm.cache_only=true but the LLM cache {self.dir} has no entry for this request "
                            f"(key {key[:12]}, prompt {_preview(request)}); run once with cache_only=false")
        return None

    def put(self, request: dict[str, Any], choices: list[str]) -> None:
        key = cache_key(request)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps({"request": request, "choices": choices}, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self, path: Path, key: str) -> list[str] | None:
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            choices = entry["choices"]
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise ValueError("choices is not a list of strings")
            return choices
        except (OSError, ValueError, KeyError, TypeError) as exc:
            target = self.dir / "quarantine" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            with self._lock:
                self.quarantined += 1
            log.warning("LLM cache entry %s is corrupt (%s): moved to %s, asking again", key[:12], exc, target)
            if self.cache_only:
                raise DataError(f"corrupt LLM cache file {path} ({exc}); it was moved to {target}. "
                                "Re-run with llm.cache_only=false to fetch it again") from None
            return None

    def counts(self) -> dict[str, int]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_quarantined": self.quarantined}


def _preview(request: dict[str, Any]) -> str:
    text = request.get("prompt") or json.dumps(request.get("messages", ""))[:200]
    text = " ".join(str(text).split())
    return repr(text[:60] + ("..." if len(text) > 60 else ""))
