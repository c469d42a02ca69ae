"""LLM backends for both stages: any OpenAI-compatible endpoint (the real `openai` client), or a local
transformers causal LM. Every answer goes through the content-addressed cache first.

OpenAI-compatible servers (vLLM, llama.cpp, ollama) are reached with `base_url`; the key is read from the
environment variable named by `llm.key_env` and appears nowhere else (not in configs, logs, W&B or
checkpoints; error messages name the variable, never the value). Retries with exponential backoff and
jitter on 408/409/429/5xx, timeouts and connection errors are the `openai` client's own (`max_retries`);
a semaphore bounds concurrent requests and a limiter keeps requests and tokens per minute under the
configured budget. Servers that ignore `n` (ollama) are detected by `len(choices) != n` and answered with
n single calls.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from lightning_modules.mpvr.cache import LLMCache
from lightning_modules.mpvr.config import LLMBackend, LLMConfig
from tenfold.errors import ConfigError, TenfoldError

log = logging.getLogger("tenfold")


class LLMError(TenfoldError):
    """The LLM endpoint refused, failed or answered something unusable."""


class RateLimiter:
    """Blocks until one more request of `tokens` tokens fits the per-minute request and token budgets."""

    def __init__(self, requests_per_minute: float | None, tpm_limit: float | None, clock=time.monotonic,
                 sleep=time.sleep) -> None:
        self.rpm, self.tpm = requests_per_minute, tpm_limit
        self.clock, self.sleep = clock, sleep
        self.window: deque[tuple[float, float]] = deque()  # (time, tokens) of the last minute's requests
        self.lock = threading.Lock()

    def acquire(self, tokens: float) -> None:
        if not self.rpm and not self.tpm:
            return
        with self.lock:
            while True:
                now = self.clock()
                while self.window and now - self.window[0][0] >= 60.0:
                    self.window.popleft()
                used = sum(t for _, t in self.window)
                if (not self.rpm or len(self.window) < self.rpm) and (not self.tpm or used + tokens <= self.tpm
                                                                       or not self.window):
                    self.window.append((now, tokens))
                    return
                self.sleep(max(0.001, 60.0 - (now - self.window[0][0])))


class LLM:
    """`complete(prompt, system, n, temperature, max_tokens)` -> n answer texts, cached."""

    def __init__(self, cfg: LLMConfig, cache: LLMCache, base_url: str | None = None) -> None:
        self.cfg = cfg
        self.cache = cache
        self.base_url = base_url or cfg.base_url
        self.calls = 0  # requests actually sent to the backend
        self._calls_lock = threading.Lock()
        self._semaphore = threading.BoundedSemaphore(max(1, cfg.concurrency))
        self._limiter = RateLimiter(cfg.requests_per_minute, cfg.tpm_limit)
        self._client: Any = None
        self._local: Any = None

    # ---- the one public call

    def complete(self, prompt: str, n: int, temperature: float, max_tokens: int,
                 system: str | None = None) -> list[str]:
        request = self._request(prompt, system, n, temperature, max_tokens)
        cached = self.cache.get(request)
        if cached is not None:
            return cached
        with self._semaphore:
            choices = self._ask(request)
        if len(choices) != n:
            choices = self._fewer_choices(request, choices)
        self.cache.put(request, choices)
        return choices

    # ---- internals

    def _request(self, prompt: str, system: str | None, n: int, temperature: float, max_tokens: int) -> dict:
        c = self.cfg
        request: dict[str, Any] = {"backend": c.backend.value, "model": c.model, "temperature": temperature,
                                   "top_p": c.top_p, "max_tokens": max_tokens, "n": n, "seed": c.seed,
                                   "stop": list(c.stop) or None}
        if c.backend is LLMBackend.openai_chat:
            request["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
        else:  # a completion endpoint or a local LM takes one text
            request["prompt"] = f"{system}\n\n{prompt}" if system else prompt
        return request

    def _fewer_choices(self, request: dict, choices: list[str]) -> list[str]:
        n = request["n"]
        if not self.cfg.n_fallback or n == 1:
            raise LLMError(f"the LLM returned {len(choices)} of n={n} choices (some servers ignore n); set "
                           "llm.n_fallback=true to make n single calls instead")
        log.warning("LLM returned %d of n=%d choices (the server ignores n): making %d single calls",
                    len(choices), n, n)
        single = dict(request, n=1)
        out: list[str] = []
        for i in range(n):
            one = dict(single, seed=None if request["seed"] is None else request["seed"] + i)
            with self._semaphore:
                got = self._ask(one)
            if not got:
                raise LLMError("the LLM returned no choice for a single (n=1) call; check llm.model and the server")
            out.append(got[0])
        return out

    def _ask(self, request: dict) -> list[str]:
        self._limiter.acquire(len(request.get("prompt") or str(request.get("messages"))) / 4
                              + request["max_tokens"] * request["n"])
        with self._calls_lock:
            self.calls += 1
        if self.cfg.backend is LLMBackend.transformers:
            return self._local_lm().generate(request)
        return self._openai(request)

    def _openai(self, request: dict) -> list[str]:
        import openai

        client = self._openai_client()
        args = {k: request[k] for k in ("model", "temperature", "top_p", "max_tokens", "n", "seed", "stop")
                if request[k] is not None}
        try:
            if self.cfg.backend is LLMBackend.openai_chat:
                response = client.chat.completions.create(messages=request["messages"], **args)
                return [(choice.message.content or "") for choice in response.choices]
            response = client.completions.create(prompt=request["prompt"], **args)
            return [choice.text for choice in response.choices]
        except openai.APIError as exc:
            raise LLMError(self._describe(exc)) from None

    def _openai_client(self) -> Any:
        if self._client is None:
            import openai

            if not self.base_url:
                raise ConfigError("llm.base_url is not set: point it at an OpenAI-compatible endpoint "
                                  "(e.g. https://api.openai.com/v1 or http://localhost:8000/v1 for vLLM)")
            key = os.environ.get(self.cfg.key_env)
            if not key and not self.cfg.serve_stub:
                log.warning("environment variable %s (llm.key_env) is not set: sending no API key", self.cfg.key_env)
            self._client = openai.OpenAI(base_url=self.base_url, api_key=key or "no-key-set",
                                         max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s)
        return self._client

    def _describe(self, exc: Exception) -> str:
        """One line for an API failure; names the key's variable, never its value."""
        import openai

        url, env = self.base_url, self.cfg.key_env
        retries = f"after {self.cfg.max_retries} retries"
        if isinstance(exc, openai.AuthenticationError):
            return (f"HTTP 401 from {url}: the API key was refused; set the environment variable {env} to a valid "
                    "key (or llm.key_env to the variable that holds it)")
        if isinstance(exc, openai.PermissionDeniedError):
            return f"HTTP 403 from {url}: the key in {env} may not use model '{self.cfg.model}'"
        if isinstance(exc, openai.RateLimitError):
            return (f"HTTP 429 from {url} {retries}: rate limited; lower llm.concurrency or "
                    "llm.requests_per_minute, or raise llm.max_retries")
        if isinstance(exc, openai.APITimeoutError):
            return f"no answer from {url} within llm.timeout_s={self.cfg.timeout_s:g} s ({retries})"
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach llm.base_url={url} ({retries}): is the server running and the URL right?"
        if isinstance(exc, openai.NotFoundError):
            return (f"HTTP 404 from {url}: model '{self.cfg.model}' or the "
                    f"{'chat' if self.cfg.backend is LLMBackend.openai_chat else 'completions'} endpoint not found; "
                    "check llm.model and llm.backend")
        status = getattr(exc, "status_code", None)
        if status is not None and status >= 500:
            return f"HTTP {status} from {url} {retries}: server error"
        detail = _scrub(" ".join(str(getattr(exc, "message", exc)).split())[:200], os.environ.get(env))
        return f"HTTP {status} from {url}: {detail}"

    def _local_lm(self) -> LocalCausalLM:
        if self._local is None:
            self._local = LocalCausalLM(self.cfg.local_path)
        return self._local


class LocalCausalLM:
    """A transformers causal LM from a local directory (no download): sampled, seeded per request."""

    def __init__(self, path: str | None) -> None:
        if not path or not os.path.isdir(path):
            raise ConfigError(f"llm.local_path={path!r}: point it at a local transformers model directory "
                              "(config.json + weights + tokenizer) for llm.backend=transformers")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        self.lock = threading.Lock()

    def generate(self, request: dict) -> list[str]:
        import torch

        from lightning_modules.mpvr.cache import cache_key

        inputs = self.tokenizer(request["prompt"], return_tensors="pt")
        with self.lock, torch.no_grad():
            # Seeded by the request itself: the same request gives the same samples.
            torch.manual_seed(int(cache_key(request)[:8], 16) if request["seed"] is None else request["seed"])
            out = self.model.generate(
                **inputs, do_sample=True, temperature=request["temperature"], top_p=request["top_p"] or 1.0,
                max_new_tokens=request["max_tokens"], num_return_sequences=request["n"],
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
