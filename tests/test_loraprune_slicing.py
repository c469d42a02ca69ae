"""Masks, merging and slicing: the masked LoRA model and the merged, physically smaller model compute
the same logits; shapes, protected layers, parameter count and the transformers round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_modules.lora_pruning.callbacks import prune_lowest
from lightning_modules.lora_pruning.groups import llama_blocks, protected_layers
from lightning_modules.lora_pruning.lora_layers import linear_parts, wrap_with_lora
from lightning_modules.lora_pruning.masks import attach_masks, group_keep, set_group_keep
from lightning_modules.lora_pruning.slicing import block_keeps, merged_copy, slice_blocks
from lightning_modules.loraprune.pruned_llama import PrunedLlamaForCausalLM, layer_shapes, pruned_llama_from_sliced

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HEAD_DIM, HIDDEN, FFN, LAYERS, VOCAB = 8, 64, 96, 5, 50


def _masked_model(heads: int, kv_heads: int, ratio: float = 0.5):
    """A LoRA-wrapped LLaMA with non-zero B, and `ratio` of every prunable block masked at random."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, head_dim=HEAD_DIM, vocab_size=VOCAB, max_position_embeddings=64,
                         attention_bias=True)
    model = wrap_with_lora(LlamaForCausalLM(config), TARGETS, rank=4, alpha=8, dropout=0.0, modules_to_save=[])
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    base = model.get_base_model()
    blocks = llama_blocks(config, protected_layers(LAYERS, first=1, last=True))
    attach_masks(base, blocks)
    for block in blocks:
        n_prune = int(block.n_groups * ratio)
        set_group_keep(base, block, prune_lowest(torch.rand(block.n_groups), group_keep(base, block), n_prune))
    return model.eval(), config, blocks


def _sliced(model, config, blocks):
    keeps = block_keeps(model.get_base_model(), blocks)
    dense = merged_copy(model)
    slice_blocks(dense, blocks, keeps)
    return pruned_llama_from_sliced(dense, layer_shapes(config, blocks, keeps))


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (8, 2)], ids=["mha", "gqa"])
def test_masked_logits_equal_sliced_merged_logits(heads: int, kv_heads: int) -> None:
    model, config, blocks = _masked_model(heads, kv_heads)
    dense = _sliced(model, config, blocks)
    tokens = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        expected, actual = model(input_ids=tokens).logits, dense(input_ids=tokens).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # ...and pruning really changed the model: the same weights unpruned give other logits
    unpruned, _, _ = _masked_model(heads, kv_heads, ratio=0.0)
    with torch.no_grad():
        assert (unpruned(input_ids=tokens).logits - expected).abs().max() > 1e-2

    n_rep = heads // kv_heads
    for i, layer in enumerate(dense.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        protected = i in (0, LAYERS - 1)
        kv = kv_heads if protected else kv_heads - kv_heads // 2
        channels = FFN if protected else FFN // 2
        assert attn.q_proj.weight.shape == (kv * n_rep * HEAD_DIM, HIDDEN)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (kv * HEAD_DIM, HIDDEN)
        assert attn.o_proj.weight.shape == (HIDDEN, kv * n_rep * HEAD_DIM)
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (channels, HIDDEN)
        assert mlp.down_proj.weight.shape == (HIDDEN, channels)


def test_protected_layers_are_untouched_and_parameter_count_matches() -> None:
    model, config, blocks = _masked_model(8, 2)
    base = model.get_base_model()
    assert {b.layer for b in blocks} == {1, 2, 3}
    dense = _sliced(model, config, blocks)
    merged = merged_copy(model)
    for i in (0, LAYERS - 1):
        for name, p in merged.model.layers[i].state_dict().items():
            assert torch.equal(dense.model.layers[i].state_dict()[name], p), (i, name)
    # q,k,v,o with biases + gate, up, down per layer, analytically
    def layer_params(kv: int, channels: int) -> int:
        q = kv * 4 * HEAD_DIM
        kvd = kv * HEAD_DIM
        return (HIDDEN * q + q) + 2 * (HIDDEN * kvd + kvd) + (q * HIDDEN + HIDDEN) + 3 * HIDDEN * channels + 2 * HIDDEN
    shared = 2 * VOCAB * HIDDEN + HIDDEN
    expected = shared + 2 * layer_params(2, FFN) + 3 * layer_params(1, FFN // 2)
    assert sum(p.numel() for p in dense.parameters()) == expected
    # pruned rows are zero in the frozen weight, LoRA B and bias; pruned o columns zero in W0 and A
    q = linear_parts(base.get_submodule("model.layers.1.self_attn.q_proj"))
    o = linear_parts(base.get_submodule("model.layers.1.self_attn.o_proj"))
    rows = group_keep(base, blocks[0]).repeat_interleave(4 * HEAD_DIM)
    assert q.weight[~rows].abs().sum() == 0 and q.lora_b[~rows].abs().sum() == 0 and q.bias[~rows].abs().sum() == 0
    assert o.weight[:, ~rows].abs().sum() == 0 and o.lora_a[:, ~rows].abs().sum() == 0


def test_save_pretrained_round_trip_and_generate(tmp_path: Path) -> None:
    model, config, blocks = _masked_model(8, 2)
    dense = _sliced(model, config, blocks)
    dense.save_pretrained(tmp_path)
    loaded = PrunedLlamaForCausalLM.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=tokens).logits, dense(input_ids=tokens).logits, rtol=0, atol=0)
    out = loaded.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=6, do_sample=False,
                          pad_token_id=0)
    assert out.shape == (1, 18) and torch.equal(out[:, :12], tokens)


def test_lora_criterion_needs_no_base_weight_gradients() -> None:
    model, config, _ = _masked_model(8, 2)
    model.train()
    tokens = torch.randint(0, VOCAB, (2, 16))
    model(input_ids=tokens, labels=tokens).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad)


def test_vit_masked_logits_equal_sliced_and_rebuilt_export() -> None:
    from lightning_modules.lora_pruning.groups import vit_blocks
    from lightning_modules.loraprune_vit.net import build_pruned_vit, build_vit, set_vit_head_counts, vit_layer_shapes

    torch.manual_seed(0)
    arch = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 3, "num_heads": 4, "mlp_ratio": 2.0}
    model = wrap_with_lora(build_vit("vit_tiny_patch16_224", 5, arch), ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"],
                           rank=4, alpha=8, dropout=0.0, modules_to_save=["head"]).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    base = model.get_base_model()
    blocks = vit_blocks(base, protected_layers(3, first=0, last=True))
    attach_masks(base, blocks)
    for block in blocks:
        keep = prune_lowest(torch.rand(block.n_groups), group_keep(base, block), block.n_groups // 2)
        set_group_keep(base, block, keep)
    keeps = block_keeps(base, blocks)
    dense = merged_copy(model)
    slice_blocks(dense, blocks, keeps)
    shapes = vit_layer_shapes(dense, blocks, keeps)
    set_vit_head_counts(dense, shapes)
    assert shapes == [{"heads": 2, "mlp_hidden": 32}, {"heads": 2, "mlp_hidden": 32}, {"heads": 4, "mlp_hidden": 64}]
    assert dense.blocks[0].attn.qkv.weight.shape == (3 * 2 * 8, 32)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(dense(images), model(images), rtol=0, atol=1e-5)
        rebuilt = build_pruned_vit("vit_tiny_patch16_224", 5, arch, shapes).eval()
        rebuilt.load_state_dict(dense.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt(images), model(images), rtol=0, atol=1e-5)
