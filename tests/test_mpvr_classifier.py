"""MPVR's zero-shot classifier: the ensembling maths, its invariances, class alignment, the released banks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.mpvr import banks, world
from lightning_modules.mpvr.ensemble import (
    class_weights,
    class_weights_per_class_loop,
    ensemble_weights,
    segment_class_weights,
    zero_shot_logits,
)
from lightning_modules.mpvr.sources import BUNDLED_BANKS
from tenfold.errors import DataError

TINY_CLIP = {"embed_dim": 64, "vision_cfg": {"layers": 1, "width": 64, "head_width": 32, "patch_size": 8,
                                             "image_size": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
EUROSAT_COOP_NAMES = {  # CoOp's folder names -> the names the released EuroSAT banks use (NEW_CNAMES)
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        yield model, (lambda texts: model.encode_text(tokenizer(list(texts))))


# ---- the maths on hand-made embeddings


def test_normalise_then_mean_then_renormalise() -> None:
    w = segment_class_weights(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([0, 0]), 1)
    torch.testing.assert_close(w[0], torch.tensor([0.316228, 0.948683]), atol=1e-6, rtol=0)
    raw = F.normalize(torch.tensor([[3.0, 4.0], [0.0, 2.0]]).mean(0), dim=0)  # the wrong order
    assert torch.allclose(raw, torch.tensor([0.447214, 0.894427]), atol=1e-6)
    assert not torch.allclose(w[0], raw, atol=1e-3)


def test_variable_prompt_counts_batched_equals_loop_and_columns_are_unit() -> None:
    g = torch.Generator().manual_seed(0)
    counts = [1, 7, 3, 300, 2]
    emb = torch.randn(sum(counts), 16, generator=g) * torch.rand(sum(counts), 1, generator=g) * 5
    ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    w = segment_class_weights(emb, ids, len(counts))
    start = 0
    for c, n in enumerate(counts):
        ref = F.normalize(F.normalize(emb[start:start + n], dim=-1).mean(0), dim=0)
        torch.testing.assert_close(w[c], ref, atol=1e-6, rtol=0)
        start += n
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(len(counts)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no prompts"):
        segment_class_weights(emb, ids, len(counts) + 1)


def test_fp32_agrees_with_float64_and_scale_keeps_argmax() -> None:
    g = torch.Generator().manual_seed(1)
    emb, ids = torch.randn(200, 32, generator=g), torch.randint(0, 10, (200,), generator=g)
    w32 = segment_class_weights(emb, ids, 10)
    w64 = F.normalize(torch.zeros(10, 32, dtype=torch.float64).index_add_(
        0, ids, F.normalize(emb.double(), dim=-1)), dim=-1)
    assert (w32.double() - w64).abs().max() < 1e-5
    f = torch.randn(50, 32, generator=g)
    a, b = zero_shot_logits(f, w32, 1.0), zero_shot_logits(f, w32, 100.0)
    assert torch.equal(a.argmax(-1), b.argmax(-1)) and torch.equal(a.softmax(-1).argmax(-1), a.argmax(-1))


# ---- invariances through the real (tiny, random) open_clip text tower


def test_prompt_order_duplicates_and_a_foreign_prompt(encoder) -> None:
    _, encode = encoder
    bank = {"cat": ["a cat sitting.", "a small cat.", "whiskers and fur."], "dog": ["a dog.", "a barking dog."]}
    names = ["cat", "dog"]
    w = class_weights(encode, bank, names)
    shuffled = {k: random.Random(0).sample(v, len(v)) for k, v in bank.items()}
    torch.testing.assert_close(class_weights(encode, shuffled, names), w, atol=1e-6, rtol=0)
    doubled = {k: v + v for k, v in bank.items()}
    torch.testing.assert_close(class_weights(encode, doubled, names), w, atol=1e-6, rtol=0)
    foreign = {"cat": bank["cat"] + ["a barking dog."], "dog": bank["dog"]}
    assert (class_weights(encode, foreign, names)[0] - w[0]).abs().max() > 1e-3


def test_s_temp_is_the_one_prompt_case(encoder) -> None:
    _, encode = encoder
    names = ["tennis ball", "stop sign"]
    w = class_weights(encode, banks.template_bank(banks.S_TEMP, names), names)
    plain = F.normalize(encode(["a photo of a tennis ball.", "a photo of a stop sign."]), dim=-1)
    torch.testing.assert_close(w, plain, atol=1e-6, rtol=0)


def test_classes_are_matched_by_name_not_key_order(encoder) -> None:
    _, encode = encoder
    bank = {k: v[:12] for k, v in banks.read_bank_file(BUNDLED_BANKS / "gpt" / "CIFAR10_local.json").items()}
    names = list(bank)
    reversed_keys = dict(reversed(list(bank.items())))
    torch.testing.assert_close(class_weights(encode, reversed_keys, names), class_weights(encode, bank, names),
                               atol=1e-6, rtol=0)
    # A dataset whose label order differs from the JSON: row i is still class i's.
    order = names[::-1]
    w = class_weights(encode, bank, order)
    torch.testing.assert_close(w[0], class_weights(encode, bank, names)[-1], atol=1e-6, rtol=0)


def test_batched_builder_matches_the_official_loop(encoder) -> None:
    _, encode = encoder
    bank = banks.read_bank_file(BUNDLED_BANKS / "gpt" / "CIFAR10_local.json")
    bank = {k: v[: 5 + 3 * i] for i, (k, v) in enumerate(bank.items())}  # variable counts
    names = list(bank)
    assert (class_weights(encode, bank, names, chunk=7) - class_weights_per_class_loop(encode, bank, names)
            ).abs().max() < 1e-6


def test_two_bank_ensemble(encoder) -> None:
    _, encode = encoder
    names = world.CLASS_NAMES[:3]
    a = class_weights(encode, banks.template_bank(banks.S_TEMP, names), names)
    b = class_weights(encode, banks.template_bank(banks.WORLD_TEMPLATES, names), names)
    e = ensemble_weights([a, b])
    torch.testing.assert_close(e, F.normalize(a + b, dim=-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(ensemble_weights([a, a]), a, atol=1e-6, rtol=0)


# ---- the released banks (MIT, bundled in lightning_modules/mpvr/banks)


@pytest.mark.parametrize("name, per_class, total, unique, longest", [
    ("gpt/CIFAR10_local.json", 126, 1260, 1260, 57),
    ("gpt/EuroSAT.json", 340, 3400, 3400, 49),
    ("mixtral/CIFAR10_local.json", 300, 3000, 2838, 54),
    ("mixtral/EuroSAT.json", 310, 3100, 3034, 57),
])
def test_released_bank_statistics_with_the_real_bpe(name, per_class, total, unique, longest) -> None:
    bank = banks.read_bank_file(BUNDLED_BANKS / name)
    stats = banks.bank_statistics(bank, banks.open_clip_token_count())
    assert len(stats) == 10 and {r["prompts"] for r in stats} == {per_class}
    assert sum(r["prompts"] for r in stats) == total
    assert len({p for v in bank.values() for p in v}) == unique
    assert max(r["max_tokens"] for r in stats) == longest and sum(r["truncated"] for r in stats) == 0


def test_eurosat_banks_align_through_the_coop_name_map_and_ensemble(encoder) -> None:
    _, encode = encoder
    coop = list(EUROSAT_COOP_NAMES)
    aligned = [banks.align_bank(banks.read_bank_file(BUNDLED_BANKS / f"{llm}/EuroSAT.json"), coop, EUROSAT_COOP_NAMES)
               for llm in ("gpt", "mixtral")]
    assert [len(b["SeaLake"]) for b in aligned] == [340, 310] and "sea or lake" in aligned[0]["SeaLake"][0]
    ws = [class_weights(encode, {k: v[:16] for k, v in bank.items()}, coop) for bank in aligned]
    w = ensemble_weights(ws)
    assert w.shape == (10, 64)
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(10), atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="missing from the bank"):
        banks.align_bank(banks.read_bank_file(BUNDLED_BANKS / "gpt/EuroSAT.json"), coop)


def test_nested_format_round_trip(tmp_path: Path) -> None:
    nested = {"cat": {"q1": ["a", "b"], "q2": ["c"]}, "dog": {"q1": ["d"]}}
    banks.write_bank(tmp_path / "n.json", nested)
    assert banks.read_bank_file(tmp_path / "n.json") == {"cat": ["a", "b", "c"], "dog": ["d"]}
    assert banks.flatten_nested(nested) == {"cat": ["a", "b", "c"], "dog": ["d"]}
    banks.write_bank(tmp_path / "f.json", {"café": ["é"]})
    assert banks.read_bank_file(tmp_path / "f.json") == {"café": ["é"]}


@pytest.mark.parametrize("content, names, match", [
    (None, ["cat"], "prompt bank file not found"),
    ("{not json", ["cat"], "not valid JSON"),
    ({"cat": ["a"]}, ["cat", "dog"], r"missing from the bank: \['dog'\]"),
    ({"cat": []}, ["cat"], "empty prompt list"),
    ({"cat": ["a", 3]}, ["cat"], "non-string entries"),
    ({"cat": ["a"]}, ["cat", "cat"], "unique and non-empty"),
])
def test_bad_banks_are_one_line_errors(tmp_path: Path, content, names, match) -> None:
    path = tmp_path / "bank.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError, match=match) as info:
        banks.align_bank(banks.read_bank_file(path), names)
    assert "\n" not in str(info.value)


def test_extra_bank_classes_are_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="tenfold"):
        assert banks.align_bank({"cat": ["a"], "dog": ["b"]}, ["cat"]) == {"cat": ["a"]}
    assert "not in the dataset" in caplog.text and "dog" in caplog.text


def test_ds_temp_template_counts() -> None:
    assert len(banks.imagenet_templates()) == 80 and len(banks.EUROSAT_TEMPLATES) == 3
    assert len(banks.DTD_TEMPLATES) == 8 and banks.S_TEMP == ("a photo of a {}.",)


# ---- the demo world


def test_zero_shot_class_names_share_no_token_with_any_caption() -> None:
    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    caption_tokens = {t for w in world.caption_vocabulary() for t in tokenizer.encode(w)} | set(tokenizer.encode(", ;"))
    for name in world.CLASS_NAMES:
        assert not set(tokenizer.encode(name)) & caption_tokens, name
        assert not set(name.split()) & world.caption_vocabulary()
    pairs = [world.captioned_pair(0, "train", i) for i in range(200)]
    assert {t for _, c in pairs for t in tokenizer.encode(c)} <= caption_tokens
    image, caption = world.captioned_pair(0, "train", 5)
    again = world.captioned_pair(0, "train", 5)
    assert caption == again[1] and (image == again[0]).all() and image.shape == (32, 32, 3)


def test_random_clip_stays_in_the_chance_band(encoder) -> None:
    """No leakage: an untrained CLIP with the MPVR-style bank is at chance (binomial band, 1e-4 tails)."""
    from scipy.stats import binom

    model, encode = encoder
    bank = {c: [f"A {c} is a {col} {sh}.", f"It is {col} and {pat}."] for c, (sh, col, pat) in world.KNOWLEDGE.items()}
    w = class_weights(encode, bank, world.CLASS_NAMES)
    items = [world.labelled_image(3, i) for i in range(300)]
    x = torch.stack([world.to_tensor(a, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD) for a, _ in items])
    y = torch.tensor([label for _, label in items])
    with torch.no_grad():
        correct = int((zero_shot_logits(model.encode_image(x), w).argmax(-1) == y).sum())
    assert binom.ppf(1e-4, 300, 0.1) <= correct <= binom.isf(1e-4, 300, 0.1)


def test_architecture_map_gives_openai_and_metaclip_weights_quickgelu() -> None:
    from lightning_modules.mpvr.clip import resolve_arch
    from lightning_modules.mpvr.config import ClipConfig, WeightsSource
    from tenfold.errors import ConfigError

    assert resolve_arch(ClipConfig(arch="ViT-B-32", weights=WeightsSource.openai)) == "ViT-B-32-quickgelu"
    assert resolve_arch(ClipConfig(arch="ViT-L-14", weights=WeightsSource.metaclip)) == "ViT-L-14-quickgelu"
    assert resolve_arch(ClipConfig(arch="ViT-B-32-quickgelu", weights=WeightsSource.laion)) == "ViT-B-32"
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        resolve_arch(ClipConfig(arch="ViT-Q-99"))
