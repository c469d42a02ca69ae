"""Secrets never reach a run's records: values under secret-looking key names are redacted by name.

The match is on whole words of the key (split at `_`, `-`, `.` and camelCase), so `api_key`, `hf_token`,
`client_secret`, `db_password`, `auth` and `credentials` are secrets, while `max_new_tokens`, `tokenizer`,
`pad_token_id`, `keep_ratio`, `monitor_key` and `key_env` (the *name* of a variable) are not. Used for
config.yaml, meta.yaml's command line, checkpoints' hyper-parameters, export_meta.yaml and W&B.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REDACTED = "<redacted>"
# A secret wherever the word appears in the key.
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "apikey",
        "bearer",
        "cookie",
    }
)
# A secret as the key's last word ("hf_token", "access_token"; not "token_budget" or "tokens").
SECRET_SUFFIXES = frozenset({"token"})
# "<qualifier>_key" is a secret ("api_key", "private_key"); a bare "key" or "sort_key" is not.
KEY_QUALIFIERS = frozenset({"api", "access", "private", "signing", "encryption", "client", "license", "master"})


def key_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_secret_name(name: str) -> bool:
    words = key_words(name)
    if not words:
        return False
    if any(w in SECRET_WORDS for w in words) or words[-1] in SECRET_SUFFIXES:
        return True
    return len(words) > 1 and words[-1] == "key" and words[-2] in KEY_QUALIFIERS


def redact_secrets(tree: Any, _inside_secret: bool = False) -> Any:
    """A copy of a plain config tree with the values under secret-looking keys replaced by `<redacted>`."""
    if isinstance(tree, dict):
        return {k: redact_secrets(v, _inside_secret or is_secret_name(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [redact_secrets(v, _inside_secret) for v in tree]
    if _inside_secret and tree not in (None, "", REDACTED):
        return REDACTED
    return tree


def redact_command(argv: list[str]) -> list[str]:
    """A command line with the values of secret-looking `key=value` overrides redacted."""
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}={REDACTED}" if sep and not key.startswith("-") and is_secret_name(key) else arg)
    return out


# `${oc.env:NAME}` or `${oc.env:NAME,default}` in a raw config value
ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)")


def secret_env_names(value: Any) -> list[str]:
    """The secret-looking environment variables a raw config string interpolates."""
    if not isinstance(value, str):
        return []
    return [name for name in ENV_INTERPOLATION.findall(value) if is_secret_name(name)]


@contextmanager
def redacted_argv() -> Iterator[None]:
    """sys.argv redacted for the duration (W&B records the command line when its run starts)."""
    import sys

    saved = list(sys.argv)
    sys.argv[:] = redact_command(saved)
    try:
        yield
    finally:
        sys.argv[:] = saved
