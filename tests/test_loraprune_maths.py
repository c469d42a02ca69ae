"""LoRAPrune's pure maths: the gradient identities behind the LoRA-guided estimate, group scores,
the moving average, the cubic schedule and the monotone pruning decision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.lora_pruning.callbacks import prune_lowest
from lightning_modules.lora_pruning.importance import (
    ImportancePower,
    ema_update,
    group_scores,
    lora_guided_gradient,
    normalized,
)
from lightning_modules.lora_pruning.lora_layers import linear_parts, wrap_with_lora
from lightning_modules.lora_pruning.schedule import cubic_sparsity, groups_to_prune, is_pruning_step
from lightning_modules.lora_pruning.scoring import Criterion, gradient_estimate


def _lora_linear(zero_b: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = wrap_with_lora(nn.Sequential(nn.Linear(12, 10)), ["0"], rank=3, alpha=6, dropout=0.0,
                           modules_to_save=[])
    layer = model.get_base_model()[0]
    if not zero_b:
        nn.init.normal_(layer.lora_B["default"].weight)
    layer.get_base_layer().weight.requires_grad_(True)  # "full gradients enabled"
    x, y = torch.randn(7, 12, dtype=torch.float64), torch.randn(7, 10, dtype=torch.float64)
    model.double()
    loss = ((model(x) - y) ** 2).sum() + model(x).sin().sum()
    loss.backward()
    return model, layer


def test_lora_gradients_are_projections_of_the_full_gradient() -> None:
    _, layer = _lora_linear(zero_b=False)
    parts = linear_parts(layer)
    g = parts.weight.grad  # dL/dW0 = dL/dW for the merged weight W = W0 + s B A
    assert parts.scale == 2.0
    torch.testing.assert_close(parts.lora_b.grad, parts.scale * g @ parts.lora_a.T)
    torch.testing.assert_close(parts.lora_a.grad, parts.scale * parts.lora_b.T @ g)


def test_estimate_is_the_formula_and_reduces_to_s_g_at_a_when_b_is_zero() -> None:
    _, layer = _lora_linear(zero_b=True)
    parts = linear_parts(layer)
    g, a = parts.weight.grad, parts.lora_a
    estimate = gradient_estimate(layer, Criterion.lora)
    expected = parts.lora_b.grad @ a + parts.lora_b @ parts.lora_a.grad - parts.lora_b.grad @ parts.lora_a.grad
    torch.testing.assert_close(estimate, expected)
    torch.testing.assert_close(estimate, parts.scale * g @ a.T @ a)
    assert estimate.abs().sum() > 0
    assert torch.equal(gradient_estimate(layer, Criterion.grad), g)


def test_lora_guided_gradient_on_random_tensors() -> None:
    a, b, ga, gb = torch.randn(3, 5), torch.randn(4, 3), torch.randn(3, 5), torch.randn(4, 3)
    torch.testing.assert_close(lora_guided_gradient(a, b, ga, gb), gb @ a + b @ ga - gb @ ga)


def test_group_scores_sum_rows_columns_and_fused_chunks() -> None:
    imp = torch.arange(24.0).view(6, 4)  # (d_out, d_in)
    # rows in groups of 2: row sums 6, 22, 38, 54, 70, 86
    assert group_scores(imp, "out", 2).tolist() == [28.0, 92.0, 156.0]
    # columns in groups of 2: column sums 60, 66, 72, 78
    assert group_scores(imp, "in", 2).tolist() == [126.0, 150.0]
    # fused [q; k; v] with one row per head and chunk: head h owns rows h, 2+h, 4+h
    assert group_scores(imp, "out", 1, chunks=3).tolist() == [6.0 + 38.0 + 70.0, 22.0 + 54.0 + 86.0]
    torch.testing.assert_close(normalized(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8]))


def test_importance_power_changes_group_rankings() -> None:
    from lightning_modules.lora_pruning.importance import element_importance

    grad, weight = torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.ones(2, 2)
    assert group_scores(element_importance(grad, weight, ImportancePower.abs), "out", 1).tolist() == [2.0, 2.0]
    assert group_scores(element_importance(grad, weight, ImportancePower.square), "out", 1).tolist() == [2.0, 4.0]


def test_moving_average_from_zero() -> None:
    avg = torch.zeros(2)
    for _ in range(2):
        avg = ema_update(avg, torch.tensor([1.0, 2.0]), 0.9)
    torch.testing.assert_close(avg, torch.tensor([0.19, 0.38]))


def test_cubic_schedule_warmup_rise_and_exact_target() -> None:
    total, final = 200, 0.5
    values = [cubic_sparsity(t, total, final) for t in range(1, total + 1)]
    assert all(v == 0.0 for v in values[:20])  # t <= 10% of T
    assert values[20] > 0 and all(b >= a for a, b in zip(values, values[1:]))
    assert all(v == final for v in values[180:])  # cool-down
    # cubic: half-way through the ramp, 1 - 0.5^3 of the target
    assert cubic_sparsity(100, total, final) == pytest.approx(final * (1 - 0.5**3))
    events = [t for t in range(1, total + 1) if is_pruning_step(t, total, 10)]
    assert events[:3] == [10, 20, 30] and 181 in events  # the first cool-down step reaches the target
    assert groups_to_prune(32, final) == 16 and groups_to_prune(11008, final) == 5504
    assert groups_to_prune(3, 0.99) == 2  # never a whole layer


def test_pruning_is_monotone_and_takes_the_lowest_scores() -> None:
    keep = torch.ones(6, dtype=torch.bool)
    keep = prune_lowest(torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0, 2.0]), keep, 2)
    assert keep.tolist() == [True, False, True, False, True, True]
    # group 1 now scores highest but stays pruned
    keep = prune_lowest(torch.tensor([5.0, 9.0, 4.0, 0.5, 3.0, 2.0]), keep, 3)
    assert keep.tolist() == [True, False, True, False, True, False]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort().float(), b.argsort().argsort().float()])
    return torch.corrcoef(ranks)[0, 1].item()


def test_lora_guided_channel_scores_agree_with_true_gradient_scores() -> None:
    """Digest check 3: on the same step, LoRA-guided and true-gradient FFN-channel scores rank alike."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lightning_modules.lora_pruning.groups import llama_blocks, protected_layers
    from lightning_modules.lora_pruning.scoring import block_scores

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=8,
                         num_key_value_heads=4, head_dim=8, vocab_size=100)
    model = wrap_with_lora(LlamaForCausalLM(config), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"], rank=8, alpha=16, dropout=0.0, modules_to_save=[])
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.02)  # a LoRA that has started to train
    base = model.get_base_model()
    blocks = [b for b in llama_blocks(config, protected_layers(3, 0, False)) if b.kind == "channels"]
    for block in blocks:
        for member in block.members:
            linear_parts(base.get_submodule(member.path)).weight.requires_grad_(True)
    tokens = torch.randint(0, 100, (8, 32))
    model(input_ids=tokens, labels=tokens).loss.backward()
    for block in blocks:
        lora = block_scores(base, block, Criterion.lora, ImportancePower.abs)
        true = block_scores(base, block, Criterion.grad, ImportancePower.abs)
        assert _spearman(lora, true) > 0.6
        assert abs(_spearman(torch.rand(block.n_groups), true)) < 0.2
