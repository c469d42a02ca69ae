"""ASR nets: exact folding, deployed net = plain backbone, parameter counts (digest §3.1, §6)."""

import copy

import pytest
import timm
import torch
from timm.layers import EffectiveSEModule
from torch import nn

from lightning_modules.asr.resnet_cifar import resnet_cifar
from lightning_modules.attention_reparam.attention import ASR, ChannelAttention, build_attention
from lightning_modules.attention_reparam.rdnet_asr import apply_asr_to_rdnet, create_plain_rdnet
from lightning_modules.attention_reparam.stripes import input_dependent_attentions, stripe_statistic
from tenfold.errors import ConfigError
from tenfold.reparam import reparameterize_checked, reparameterize_model

# Reduced rdnet_tiny (7 stages, one block each) so the fast tests run in about a second.
SMALL_RDNET = dict(
    num_init_features=16, growth_rates=[8, 8, 16, 16, 16, 16, 32], num_blocks_list=[1] * 7
)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _make_nontrivial(model: nn.Module, size: int, dtype: torch.dtype) -> nn.Module:
    """Random psi, layer scales and norm affines, and BN statistics from a few train batches."""
    torch.manual_seed(0)
    model.to(dtype).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("psi"):
                p.normal_(0.0, 1.0)
            elif name.endswith("gamma"):  # RDNet layer scale, 1e-6 at init would hide the blocks
                p.uniform_(0.5, 1.5)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
        for _ in range(3):
            model(torch.randn(8, 3, size, size, dtype=dtype))
    return model.eval()


def _attention_vectors(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.vector().flatten() for m in model.modules() if isinstance(m, ASR)])


def _assert_folds_exactly(model: nn.Module, size: int, dtype: torch.dtype) -> nn.Module:
    vectors = _attention_vectors(model)
    assert vectors.std() > 0.05, "attention vectors too uniform for a meaningful test"
    x = torch.randn(16, 3, size, size, dtype=dtype)
    deployed = reparameterize_model(model)
    with torch.no_grad():
        expected, actual = model(x), deployed(x)
    assert (expected - actual).abs().max().item() < TOLERANCE[dtype]
    assert torch.equal(expected.argmax(1), actual.argmax(1))
    assert not any(isinstance(m, ASR) for m in deployed.modules())
    assert not any("psi" in name for name, _ in deployed.named_parameters())
    return deployed


def _assert_loads_into(deployed: nn.Module, plain: nn.Module, size: int) -> None:
    """`deployed` has the state dict, parameter count and outputs of the plain backbone."""
    dtype = next(deployed.parameters()).dtype
    plain.to(dtype).eval().load_state_dict(deployed.state_dict(), strict=True)
    assert _num_params(plain) == _num_params(deployed)
    x = torch.randn(4, 3, size, size, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(plain(x), deployed(x))


# --- ResNet ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "train_params", "deployed_params"),
    [
        ("baseline", 1_727_284, 1_727_284),
        ("se", 1_929_388, 1_929_388),
        # The digest's 1,953,580 / 2,155,684 count the official duplicate "fused" BN; we have none.
        ("asr", 1_937_452, 1_727_284),
        ("asr_se", 2_139_556, 1_929_388),
    ],
)
def test_resnet164_parameter_counts_match_paper(variant, train_params, deployed_params):
    model = resnet_cifar(variant, depth=164, num_classes=100)
    assert _num_params(model) == train_params
    assert _num_params(reparameterize_model(model)) == deployed_params


def test_resnet29_cifar10_parameter_counts():
    assert _num_params(resnet_cifar("baseline", depth=29, num_classes=10)) == 313_114
    assert _num_params(resnet_cifar("se", depth=29, num_classes=10)) == 346_798
    assert _num_params(resnet_cifar("asr", depth=29, num_classes=10)) == 348_142


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["asr", "asr_se"])
def test_resnet_asr_folds_into_plain_backbone(variant, dtype):
    model = _make_nontrivial(resnet_cifar(variant, depth=20, num_classes=10), 32, dtype)
    deployed = _assert_folds_exactly(model, 32, dtype)
    # ASR's attention is gone; asr_se keeps its input-dependent SE, one per block.
    kept = [m for m in deployed.modules() if isinstance(m, ChannelAttention)]
    assert len(kept) == (6 if variant == "asr_se" else 0)
    plain = resnet_cifar(variant, depth=20, num_classes=10, reparameterized=True)
    _assert_loads_into(deployed, plain, 32)


def test_resnet_asr_with_effective_se_folds():
    model = resnet_cifar("asr", depth=11, num_classes=10, attention="ese")
    model = _make_nontrivial(model, 32, torch.float64)
    _assert_folds_exactly(model, 32, torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resnet164_asr_folds_exactly(dtype):
    model = _make_nontrivial(resnet_cifar("asr", depth=164, num_classes=100), 32, dtype)
    deployed = _assert_folds_exactly(model, 32, dtype)
    _assert_loads_into(deployed, resnet_cifar("baseline", depth=164, num_classes=100), 32)


def test_resnet_rejects_bad_names_and_depths():
    with pytest.raises(ConfigError, match="9n\\+2"):
        resnet_cifar("baseline", depth=50)
    with pytest.raises(ConfigError, match="valid: \\['asr', 'asr_se', 'baseline', 'se'\\]"):
        resnet_cifar("cbam")
    with pytest.raises(ConfigError, match="valid: \\['ese', 'se'\\]"):
        build_attention("cbam", 64)


# --- ASR module --------------------------------------------------------------------------------


def test_asr_starts_at_psi_one_tenth_and_ignores_the_input():
    asr = ASR(nn.BatchNorm2d(64), build_attention("se", 64)).eval()
    assert torch.equal(asr.psi, torch.full((1, 64, 1, 1), 0.1))
    v = asr.vector()
    assert ((v > 0.3) & (v < 0.7)).all()  # sigmoid of a near-zero pre-activation
    for x in (torch.randn(4, 64, 8, 8), 5 * torch.randn(2, 64, 8, 8)):
        torch.testing.assert_close(asr(x), asr.layer(x) * v, rtol=0, atol=0)


def test_asr_trains_psi_and_attention():
    torch.manual_seed(0)
    asr = ASR(nn.Conv2d(8, 64, 1), build_attention("se", 64))
    asr(torch.randn(4, 8, 5, 5)).square().mean().backward()
    assert asr.psi.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in asr.attention.parameters())


def test_reparameterize_is_repeatable_and_leaves_the_module_alone():
    asr = ASR(nn.BatchNorm2d(16), build_attention("se", 16))
    before = copy.deepcopy(asr.state_dict())
    first, second = asr.reparameterize(), asr.reparameterize()
    # Folding again does not compound the scale (the official code's pitfall with in-place folds).
    torch.testing.assert_close(first.weight, asr.vector().flatten(), rtol=0, atol=0)
    assert all(torch.equal(first.state_dict()[k], v) for k, v in second.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in asr.state_dict().items())


def test_train_export_train_matches_twin_that_never_exported():
    torch.manual_seed(0)
    model = resnet_cifar("asr", depth=11, num_classes=10)
    twin = copy.deepcopy(model)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin)]
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(4)]

    def step(m: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        m.train()
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for i, (x, y) in enumerate(batches):
        for m, opt in zip((model, twin), optimizers):
            step(m, opt, x, y)
        if i == 1:  # export mid-training, with the output check the export callback runs
            reparameterize_checked(model.eval(), x)
    x = batches[0][0]
    exports = [reparameterize_model(m.eval()) for m in (model, twin)]
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(exports[0](x), exports[1](x))


# --- RDNet -------------------------------------------------------------------------------------


def _small_asr_rdnet(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    model = apply_asr_to_rdnet(timm.create_model("rdnet_tiny", num_classes=10, **SMALL_RDNET))
    return _make_nontrivial(model, 64, dtype)


def test_apply_asr_to_rdnet_replaces_every_ese_gate():
    model = timm.create_model("rdnet_tiny", num_classes=10, **SMALL_RDNET)
    num_ese = sum(isinstance(m, EffectiveSEModule) for m in model.modules())
    apply_asr_to_rdnet(model)
    assert num_ese == 5  # rdnet_tiny: plain blocks in stages 0-1, ESE blocks in stages 2-6
    assert sum(isinstance(m, ASR) for m in model.modules()) == num_ese
    assert not any(isinstance(m, EffectiveSEModule) for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rdnet_asr_folds_into_plain_rdnet(dtype):
    deployed = _assert_folds_exactly(_small_asr_rdnet(dtype), 64, dtype)
    assert not any(isinstance(m, ChannelAttention) for m in deployed.modules())
    plain = create_plain_rdnet("rdnet_tiny", num_classes=10, **SMALL_RDNET)
    assert str(plain) == str(deployed)  # same modules, not just the same state-dict keys
    _assert_loads_into(deployed, plain, 64)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_rdnet_tiny_asr_folds_into_plain_rdnet(dtype):
    torch.manual_seed(0)
    model = _make_nontrivial(apply_asr_to_rdnet(timm.create_model("rdnet_tiny")), 64, dtype)
    deployed = _assert_folds_exactly(model, 64, dtype)
    _assert_loads_into(deployed, create_plain_rdnet("rdnet_tiny"), 64)


# --- Stripe Observation ------------------------------------------------------------------------


def test_stripe_statistic_on_a_known_matrix():
    # Columns 0.2 +- 0.1 and 0.8 +- 0.1: within = 0.1, between = std(0.2, 0.8) = 0.3.
    stats = stripe_statistic(torch.tensor([[0.1, 0.9], [0.3, 0.7]]))
    assert stats == pytest.approx({"within": 0.1, "between": 0.3, "ratio": 1 / 3})
    constant_rows = torch.tensor([[0.2, 0.5, 0.9]]).repeat(5, 1)
    assert stripe_statistic(constant_rows)["ratio"] == 0.0


def test_input_dependent_attentions_skip_asr():
    assert len(input_dependent_attentions(resnet_cifar("se", depth=20))) == 6
    assert len(input_dependent_attentions(resnet_cifar("asr", depth=20))) == 0
    assert len(input_dependent_attentions(resnet_cifar("asr_se", depth=20))) == 6
    rdnet = timm.create_model("rdnet_tiny", num_classes=10, **SMALL_RDNET)
    gates = input_dependent_attentions(rdnet)
    assert len(gates) == 5 and all(name.endswith(".gate") for name in gates)
    assert input_dependent_attentions(apply_asr_to_rdnet(rdnet)) == {}
