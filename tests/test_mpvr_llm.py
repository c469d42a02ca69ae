"""MPVR's LLM stages: the meta-prompt, the stage-1 parser, stage 2, the cache, and the failure modes of an
OpenAI-compatible endpoint -- through the real `openai` client against the loopback stub server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from lightning_modules.mpvr import stages
from lightning_modules.mpvr.cache import LLMCache, cache_key
from lightning_modules.mpvr.config import (
    CleanMode,
    DescriptionsConfig,
    GenerateConfig,
    LLMBackend,
    LLMConfig,
    QueriesConfig,
)
from lightning_modules.mpvr.llm import LLM, LLMError, RateLimiter
from lightning_modules.mpvr.stub_server import QUERY_TEMPLATES, LoopbackLLM
from lightning_modules.mpvr.world import KNOWLEDGE
from tenfold.errors import DataError

CLASSES = ["tennis ball", "ice cube"]


@pytest.fixture
def stub():
    with LoopbackLLM(KNOWLEDGE) as server:
        yield server


def make_llm(stub: LoopbackLLM, tmp_path: Path, **overrides) -> LLM:
    cache_only = overrides.pop("cache_only", False)
    settings = {"backend": LLMBackend.openai_completions, "model": "stub", "max_retries": 0,
                "cache_dir": str(tmp_path / "cache"), **overrides}
    cfg = LLMConfig(**settings)
    return LLM(cfg, LLMCache(cfg.cache_dir, cache_only), base_url=stub.base_url)


def generate(stub, tmp_path, backend=LLMBackend.openai_completions, n_queries=4, **descriptions):
    queries = QueriesConfig(dataset_name="Shapes World", description="shapes", num_queries=n_queries)
    gen = GenerateConfig(queries=queries,
                         descriptions=DescriptionsConfig(**descriptions),
                         llm=LLMConfig(backend=backend, model="stub", cache_dir=str(tmp_path / "cache"), max_retries=0,
                                       base_url=stub.base_url))
    return stages.generate_bank(gen, CLASSES)


# ---- stage 1: the meta-prompt and the parser


def test_meta_prompt_has_the_system_prompt_dtd_example_and_the_task() -> None:
    system, user = stages.meta_prompt(QueriesConfig(dataset_name="EuroSAT", description="satellite images"))
    assert system.startswith("You are provided with prompt template examples") and "generate 30 diverse" in system
    assert "Describable Textures Dataset (DTD)" in user and 'prompts.append("How can you recognize' in user
    assert user.endswith("Dataset Name: EuroSAT\nDescription: satellite images\nPrompts:\n")
    _, dtd = stages.meta_prompt(QueriesConfig(dataset_name="Describable Textures Dataset (DTD)", description="t"))
    assert dtd.startswith("Dataset Name: EuroSAT")  # the in-context example is never the target


@pytest.mark.parametrize("answer", [
    '```python\nprompts = []\nprompts.append("Describe a <class name>.")\nprompts.append(\'What colour is a {}?\')\n'
    'prompts.append("Describe a <class name>.")\nprompts.append("No slot here.")\n```',
    "1. Describe a <class name>.\n2) What colour is a {class name}?\n3. Just prose.\n",
    "- Describe a <classname>.\n* What colour is a [class name]?\n\u2022 Describe a <Class Name>.",
    'Here you go: "Describe a <class name>." and "What colour is a <category>?" -- enjoy!',
])
def test_parser_reads_each_answer_shape(answer: str) -> None:
    parsed = stages.parse_queries(answer, 30)
    assert [q.lower() for q in parsed.queries] == ["describe a <class name>.", "what colour is a <class name>?"]
    assert parsed.shortfall == 28


def test_parser_dedupes_truncates_and_drops_lines_without_a_slot() -> None:
    answer = "\n".join(f'prompts.append("{q}")' for q in QUERY_TEMPLATES + QUERY_TEMPLATES[:3]) + \
        '\nprompts.append("Describe this dataset.")'
    parsed = stages.parse_queries(answer, 30)
    assert parsed.queries == list(QUERY_TEMPLATES[:30]) and parsed.shortfall == 0 and parsed.dropped == 4


def test_unparseable_stage1_answer_is_an_error(stub, tmp_path) -> None:
    stub.behaviour.stage1_prose = True
    with pytest.raises(LLMError, match="no usable query template"):
        stages.run_queries(make_llm(stub, tmp_path), QueriesConfig())


# ---- stage 2: fill, clean


def test_fill_query_spaces_underscores_and_fixes_the_article() -> None:
    assert stages.fill_query("Describe a <class name>.", "ice_cube") == "Describe an ice cube."
    assert stages.fill_query("What is an <class name>?", "plum") == "What is a plum?"
    assert stages.fill_query("A <class name> looks like", "orange") == "An orange looks like"
    assert stages.fill_query("How does <class name> look?", "Sea or Lake") == "How does Sea or Lake look?"


def test_cleaning_modes() -> None:
    assert stages.clean_description("A red\n\ncircle", CleanMode.official) == "A redcircle."  # the official quirk
    assert stages.clean_description(" A red circle. It is  big and the", CleanMode.sentences) == "A red circle."
    assert stages.clean_description("   ", CleanMode.sentences) is None
    assert stages.completion_length(DescriptionsConfig(), "EuroSAT") == 40
    assert stages.completion_length(DescriptionsConfig(), "Food101") == 40
    assert stages.completion_length(DescriptionsConfig(), "DTD") == 50


# ---- both stages, the cache


@pytest.mark.parametrize("backend", [LLMBackend.openai_completions, LLMBackend.openai_chat])
def test_both_stages_then_a_second_run_makes_zero_calls(stub, tmp_path, backend) -> None:
    nested, counts = generate(stub, tmp_path, backend)
    assert counts["llm_calls"] == 1 + 4 * len(CLASSES) == stub.requests
    assert counts["cache_misses"] == 9 and counts["cache_hits"] == 0
    assert list(nested) == CLASSES and all(len(q) == 4 for q in nested.values())
    answers = [texts for q in nested.values() for texts in q.values()]
    assert all(len(texts) == 10 and all(t.endswith(".") for t in texts) for texts in answers)
    assert any("yellow" in t for texts in nested["tennis ball"].values() for t in texts)
    again, counts2 = generate(stub, tmp_path, backend)
    assert again == nested and counts2["llm_calls"] == 0 and counts2["cache_hits"] == 9 and stub.requests == 9


def test_changing_a_sampling_parameter_misses_the_cache(stub, tmp_path) -> None:
    generate(stub, tmp_path)
    _, counts = generate(stub, tmp_path, temperature=0.5)
    assert counts["llm_calls"] == 8 and counts["cache_hits"] == 1  # stage 1 unchanged, stage 2 re-asked
    base = {"backend": "b", "model": "m", "prompt": "p", "temperature": 0.99, "max_tokens": 50, "n": 10}
    keys = {cache_key(base), cache_key({**base, "model": "m2"}), cache_key({**base, "n": 9}),
            cache_key({**base, "prompt": "p "}), cache_key({**base, "max_tokens": 40})}
    assert len(keys) == 5 and cache_key(dict(reversed(base.items()))) == cache_key(base)


def test_cache_only_fails_on_a_miss(stub, tmp_path) -> None:
    llm = make_llm(stub, tmp_path, cache_only=True)
    with pytest.raises(DataError, match="cache_only=true but the LLM cache"):
        llm.complete("Describe a plum.", n=2, temperature=0.99, max_tokens=20)
    assert stub.requests == 0


def test_corrupt_entry_is_quarantined_and_asked_again(stub, tmp_path) -> None:
    llm = make_llm(stub, tmp_path)
    first = llm.complete("Describe a plum.", n=3, temperature=0.99, max_tokens=20)
    entry = next((tmp_path / "cache").glob("*/*.json"))
    json.loads(entry.read_text())  # complete JSON (written by rename)
    assert not list((tmp_path / "cache").glob("*/.*tmp*"))
    entry.write_text('{"choices": ["trunc')
    llm2 = make_llm(stub, tmp_path)
    assert llm2.complete("Describe a plum.", n=3, temperature=0.99, max_tokens=20) == first
    assert llm2.cache.quarantined == 1 and llm2.calls == 1
    assert (tmp_path / "cache" / "quarantine" / entry.name).is_file()
    entry.write_text("garbage")
    with pytest.raises(DataError, match="corrupt LLM cache file"):
        make_llm(stub, tmp_path, cache_only=True).complete("Describe a plum.", n=3, temperature=0.99, max_tokens=20)


# ---- what servers do wrong


def test_server_that_ignores_n_gets_single_calls(stub, tmp_path) -> None:
    stub.behaviour.ignore_n = True
    llm = make_llm(stub, tmp_path)
    assert len(llm.complete("Describe a plum.", n=4, temperature=0.99, max_tokens=20)) == 4
    assert llm.calls == 5  # one n=4 call that came back with 1 choice, then 4 single calls
    with pytest.raises(LLMError, match="returned 1 of n=4 choices"):
        make_llm(stub, tmp_path, n_fallback=False).complete("Describe a lime.", n=4, temperature=0.99, max_tokens=20)


def test_http_401_names_the_variable_never_the_key(stub, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-very-secret-value")
    stub.behaviour.status = 401
    with pytest.raises(LLMError) as info:
        make_llm(stub, tmp_path, key_env="MY_LLM_KEY").complete("x", n=1, temperature=1.0, max_tokens=5)
    assert "HTTP 401" in str(info.value) and "MY_LLM_KEY" in str(info.value)
    assert "sk-very-secret" not in str(info.value)


@pytest.mark.parametrize("status, match", [(429, "HTTP 429 .* after 2 retries"), (503, "HTTP 503 .* after 2 retries")])
def test_429_and_5xx_fail_after_the_retries(stub, tmp_path, status, match) -> None:
    stub.behaviour.status = status
    with pytest.raises(LLMError, match=match):
        make_llm(stub, tmp_path, max_retries=2).complete("x", n=1, temperature=1.0, max_tokens=5)
    assert stub.requests == 3


def test_a_transient_429_is_retried_with_backoff(stub, tmp_path) -> None:
    stub.behaviour.status, stub.behaviour.fail_times = 429, 2
    assert len(make_llm(stub, tmp_path, max_retries=3).complete("x", n=2, temperature=1.0, max_tokens=5)) == 2
    assert stub.requests == 3


def test_unreachable_endpoint_and_timeout(stub, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    cfg = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, cache_dir=str(tmp_path / "c"))
    with pytest.raises(LLMError, match="cannot reach llm.base_url=http://127.0.0.1"):
        LLM(cfg, LLMCache(cfg.cache_dir)).complete("x", n=1, temperature=1.0, max_tokens=5)
    stub.behaviour.delay_s = 1.0
    with pytest.raises(LLMError, match="no answer from .* within llm.timeout_s=0.2"):
        make_llm(stub, tmp_path, timeout_s=0.2).complete("x", n=1, temperature=1.0, max_tokens=5)


def test_rate_limiter_waits_for_the_request_and_token_budgets() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(requests_per_minute=2, tpm_limit=None, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire(1)
    assert slept == [60.0] and now[0] == 60.0
    tokens = RateLimiter(requests_per_minute=None, tpm_limit=100, clock=lambda: now[0], sleep=sleep)
    tokens.acquire(80)
    tokens.acquire(30)  # would exceed 100 tokens in the minute
    assert slept[-1] == 60.0


def test_local_transformers_backend_is_sampled_seeded_and_cached(tmp_path) -> None:
    """A tiny random GPT-2 saved to a local directory (no download) answers both stages' calls."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from datamodules.causal_lm import byte_tokenizer

    tokenizer = byte_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2)
                    ).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    answers = []
    for run in ("a", "b"):  # two caches: the samples come from the seeded model both times
        cfg = LLMConfig(backend=LLMBackend.transformers, model="tiny-gpt2", local_path=str(tmp_path / "lm"),
                        cache_dir=str(tmp_path / run))
        llm = LLM(cfg, LLMCache(cfg.cache_dir))
        answers.append(llm.complete("Describe a plum.", n=3, temperature=0.99, max_tokens=8))
        assert llm.complete("Describe a plum.", n=3, temperature=0.99, max_tokens=8) == answers[-1]
        assert llm.calls == 1 and llm.cache.hits == 1
    assert answers[0] == answers[1] and len(answers[0]) == 3 and all(isinstance(t, str) for t in answers[0])
    with pytest.raises(Exception, match="llm.local_path"):
        LLM(LLMConfig(backend=LLMBackend.transformers, cache_dir=str(tmp_path / "c")),
            LLMCache(tmp_path / "c")).complete("x", n=1, temperature=1.0, max_tokens=2)
