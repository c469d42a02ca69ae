"""gan_fingerprint: thresholds, commitment, seed sets, the generator hook, fingerprint derivation,
CFP-AE / iBD embedding on a tiny population, attacks, and the bad-input lines through train.py."""

from __future__ import annotations

import copy
import struct

import pytest
import torch
from torch import nn

from conftest import REPO, train_cli
from datamodules.gan_fingerprint import PopulationConfig, check_seed_sets, digit_tensors
from lightning_modules.gan_fingerprint import attacks, commitment, fingerprints, verification
from lightning_modules.gan_fingerprint.classifier import DigitClassifier, accuracy, train_classifier
from lightning_modules.gan_fingerprint.errors import VerificationError
from lightning_modules.gan_fingerprint.gan import Generator
from lightning_modules.gan_fingerprint.hook import Composite, GeneratorHook, InputKind
from tenfold.errors import ConfigError

DEMO = "configs/demo/gan_fingerprint.yaml"


# ---- verification statistics


def test_binomial_threshold_table_of_the_digest_exactly() -> None:
    table = {
        20: [0.55, 0.60, 0.75, 1.00],
        50: [0.36, 0.38, 0.52, 0.84],
        100: [0.28, 0.29, 0.42, 0.74],
        200: [0.22, 0.235, 0.35, 0.67],
    }
    for n, row in table.items():
        got = [verification.binomial_threshold(n, p0, 1e-6) for p0 in (0.10, 0.111, 0.20, 0.50)]
        assert got == [round(tau * n) for tau in row], n


def test_threshold_is_the_smallest_significant_count() -> None:
    from scipy.stats import binom

    for n, p0, alpha in ((100, 0.13, 1e-6), (37, 0.3, 1e-3), (500, 0.05, 1e-9)):
        k = verification.binomial_threshold(n, p0, alpha)
        assert binom.sf(k - 1, n, p0) <= alpha < binom.sf(k - 2, n, p0)


def test_threshold_errors_name_the_n_needed_and_the_p0_range() -> None:
    with pytest.raises(ConfigError, match=r"use N >= 20 \(model.num_fingerprints\)"):
        verification.binomial_threshold(10, 0.5, 1e-6)
    assert verification.min_queries(0.5, 1e-6) == 20 and verification.binomial_threshold(20, 0.5, 1e-6) == 20
    for p0 in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            verification.binomial_threshold(100, p0, 1e-6)


def test_p0_interval_and_auc() -> None:
    est = verification.estimate_p0(40, 400)
    assert est.value == 0.1 and est.low < 0.1 < est.high < 0.14
    assert verification.roc_auc([0.9, 1.0], [0.1, 0.2]) == 1.0
    assert verification.roc_auc([0.1], [0.9]) == 0.0


# ---- commitment


def _flip_bit(t: torch.Tensor, bit: int = 0) -> torch.Tensor:
    t = t.clone()
    flat = t.view(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.view(-1)
    flat[0] ^= 1 << bit
    return t


def test_commitment_changes_on_any_one_bit_flip_and_detects_tampering() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    c, g = DigitClassifier(10, 4, 8), Generator(4, 4)
    base = commitment.commit(x, y, c, g, nonce="ab", timestamp="2026-01-01T00:00:00Z")
    assert (
        commitment.commit(x.clone(), y.clone(), copy.deepcopy(c), copy.deepcopy(g), "ab", "2026-01-01T00:00:00Z")
        == base
    )
    digests = set()
    digests.add(commitment.commit(_flip_bit(x), y, c, g, "ab", base.timestamp).digest)
    digests.add(commitment.commit(x, _flip_bit(y), c, g, "ab", base.timestamp).digest)
    c2 = copy.deepcopy(c)
    with torch.no_grad():
        c2.head.bias.copy_(_flip_bit(c2.head.bias, 3))
    digests.add(commitment.commit(x, y, c2, g, "ab", base.timestamp).digest)
    g2 = copy.deepcopy(g)
    with torch.no_grad():
        g2.up[0].weight.copy_(_flip_bit(g2.up[0].weight, 5))
    digests.add(commitment.commit(x, y, c, g2, "ab", base.timestamp).digest)
    digests.add(commitment.commit(x, y, c, g, "ac", base.timestamp).digest)  # 'b' -> 'c' is one bit
    digests.add(commitment.commit(x, y, c, g, "ab", "2026-01-01T00:00:01Z").digest)  # '0' -> '1' is one bit
    assert len(digests) == 6 and base.digest not in digests
    commitment.check_commitment(base, x, y, c)
    with pytest.raises(VerificationError, match="commitment mismatch"):
        commitment.check_commitment(base, x, _flip_bit(y), c)
    assert struct.pack("<Q", 1)  # the length prefix format the serialisation uses


# ---- seed sets, hook, key derivation


def test_reference_and_independent_seed_sets_are_disjoint_enforced() -> None:
    check_seed_sets(PopulationConfig())
    with pytest.raises(ConfigError, match=r"seed\(s\) \[2\] appear in both reference_seeds and independent_seeds"):
        check_seed_sets(PopulationConfig(independent_seeds=[2, 5]))
    with pytest.raises(ConfigError, match="protected_seed and reference_seeds"):
        check_seed_sets(PopulationConfig(protected_seed=1))
    with pytest.raises(ConfigError, match="reference_seeds and independent_seeds"):
        check_seed_sets(PopulationConfig(other_width_seed=3))


class _SpatialGenerator(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 4 and z.shape[2:] == (1, 1)
        return z[:, :64].reshape(len(z), 1, 8, 8).tanh()


def test_generator_hook_layouts_eval_mode_shape_and_nan() -> None:
    z = torch.randn(3, 64)
    flat = GeneratorHook(nn.Sequential(nn.Unflatten(1, (1, 8, 8))), (1, 8, 8))
    assert torch.equal(flat(z[:, :, None, None]), z.view(3, 1, 8, 8))  # (B, d, 1, 1) -> (B, d)
    assert GeneratorHook(_SpatialGenerator(), (1, 8, 8), InputKind.latent_spatial)(z).shape == (3, 1, 8, 8)
    g = Generator(64, 8).train()
    c = DigitClassifier(10, 4, 8).eval()
    assert torch.equal(Composite(c, g.eval())(z), c(g(z)))  # F = C o G
    g.train()
    with pytest.warns(UserWarning, match="train mode"):
        GeneratorHook(g, (1, 8, 8))(z)
    assert not g.training
    with pytest.raises(VerificationError, match=r"outputs of shape \(1, 16, 16\)"):
        GeneratorHook(nn.Sequential(nn.Linear(64, 256), nn.Unflatten(1, (1, 16, 16))), (1, 8, 8))(z)
    with pytest.raises(VerificationError, match="NaN or Inf"):
        GeneratorHook(nn.Sequential(nn.Unflatten(1, (1, 8, 8))), (1, 8, 8))(z * float("nan"))
    with pytest.raises(VerificationError, match="has 5 classes"):
        verification.match_count(DigitClassifier(5, 4, 8), torch.zeros(2, 1, 8, 8), torch.tensor([1, 9]))


def test_fingerprint_set_is_a_pure_function_of_the_key() -> None:
    g, c = Generator(8, 8).eval(), DigitClassifier(10, 4, 8).eval()
    state = torch.random.get_rng_state()
    x1, y1 = fingerprints.ibd_fingerprints(g, c, "k", 50, 8, 10)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG touched
    x2, y2 = fingerprints.ibd_fingerprints(g, c, "k", 50, 8, 10)
    x3, _ = fingerprints.ibd_fingerprints(g, c, "k2", 50, 8, 10)
    assert fingerprints.fingerprint_set_hash(x1, y1) == fingerprints.fingerprint_set_hash(x2, y2)
    assert not torch.equal(x1, x3)
    natural, _ = fingerprints.natural_labels(c, g(x1))
    assert (y1 != natural).all()
    with pytest.raises(ConfigError, match="model.secret_key is empty"):
        fingerprints.key_generator("", "x")


# ---- a tiny trained population


class DigitMixer(nn.Module):
    """A stand-in generator needing no GAN training: z picks a soft mixture of real digits (softmax(A z))."""

    def __init__(self, bank: torch.Tensor, z_dim: int, seed: int) -> None:
        super().__init__()
        self.bank = nn.Parameter(bank.clone(), requires_grad=False)
        self.a = nn.Linear(z_dim, len(bank))
        with torch.no_grad():
            self.a.weight.copy_(3 * torch.randn(len(bank), z_dim, generator=torch.Generator().manual_seed(seed)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.a(z.flatten(1)).softmax(1)
        return torch.einsum("bm,mchw->bchw", w, self.bank)


@pytest.fixture(scope="module")
def tiny() -> dict:
    torch.manual_seed(0)
    train_x, train_y = digit_tensors(0)["train"]
    c0 = train_classifier(train_x, train_y, seed=100, epochs=8, width=32, lr=3e-3)
    return {
        "g": DigitMixer(train_x[:40], 16, 0),
        "ref": DigitMixer(train_x[40:80], 16, 1),
        "ind": DigitMixer(train_x[80:120], 16, 4),
        "c0": c0,
        "train": (train_x, train_y),
        "val": digit_tensors(0)["val"],
    }


def _rate(c: nn.Module, g: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return verification.match_count(c, g(x), y) / len(y)


def test_cfp_ae_fingerprints_are_adversarial_examples_of_the_composite(tiny: dict) -> None:
    g, c0 = tiny["g"], tiny["c0"]
    s = fingerprints.PGDSettings(eps=0.5, steps=60, step_size=0.03, confidence=0.8, candidates_per_fingerprint=12)
    x, y = fingerprints.cfp_ae(g, c0, "key", 10, 16, 10, s)
    assert _rate(c0, g, x, y) == 1.0  # by construction
    x0 = torch.randn(10 * 12, 16, generator=fingerprints.key_generator("key", "cfp-ae"))
    dist = torch.cdist(x, x0, p=float("inf")).min(1).values
    assert (dist <= 0.5 + 1e-6).all()  # inside the eps ball around one of the key's seeds
    with pytest.raises(ConfigError, match="found only"):
        fingerprints.cfp_ae(g, c0, "key", 20, 16, 10, fingerprints.PGDSettings(eps=1e-4, steps=2, confidence=0.8))


def test_ibd_embedding_implants_the_fingerprint_and_leaves_g_bit_identical(tiny: dict) -> None:
    g, c0, ref, ind = tiny["g"], tiny["c0"], tiny["ref"], tiny["ind"]
    g_hash = commitment.weights_hash(g)
    x, y = fingerprints.ibd_fingerprints(g, c0, "key", 40, 16, 10)
    with torch.no_grad():
        fp = g(x)
        refs = ref(x)
        fixed = fingerprints.EmbeddingBatch(fp, y, c0(fp).argmax(1), refs, c0(refs).argmax(1), refs)
    c = DigitClassifier(10, 32, 128, fine_classes=20)
    c.load_state_dict(c0.state_dict(), strict=False)
    opt = torch.optim.Adam(c.parameters(), 2e-3)
    rng = torch.Generator().manual_seed(0)
    train_x, train_y = tiny["train"]
    for step in range(200):
        i = torch.randint(len(train_x), (64,), generator=rng)
        terms = fingerprints.embedding_loss(
            c,
            train_x[i],
            train_y[i],
            fixed,
            fingerprints.LossWeights(),
            fingerprints.AugmentSettings(),
            rng,
            v2=step % 2 == 0,
        )
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    c.eval()
    assert commitment.weights_hash(g) == g_hash
    assert _rate(c0, g, x, y) == 0.0  # the secret lives in C*, not in C0
    assert _rate(c, g, x, y) >= 0.8
    assert _rate(c, ind, x, y) <= 0.3
    assert accuracy(c, *tiny["val"]) > accuracy(c0, *tiny["val"]) - 0.1


def test_distillation_term_is_zero_against_itself_and_pulls_towards_c0(tiny: dict) -> None:
    g, c0, ref = tiny["g"], tiny["c0"], tiny["ref"]
    x, y = fingerprints.ibd_fingerprints(g, c0, "key", 10, 16, 10)
    with torch.no_grad():
        fp, refs = g(x), ref(x)
        fixed = fingerprints.EmbeddingBatch(fp, y, c0(fp).argmax(1), refs, c0(refs).argmax(1), None)
    real, labels = tiny["train"][0][:64], tiny["train"][1][:64]
    weights = fingerprints.LossWeights(distill=1.0)

    def distill(c: nn.Module, teacher: nn.Module) -> torch.Tensor:
        return fingerprints.embedding_loss(c, real, labels, fixed, weights, fingerprints.AugmentSettings(),
                                           torch.Generator().manual_seed(0), False, teacher)["distill"]

    assert float(distill(c0, c0)) == pytest.approx(0.0, abs=1e-6)
    fresh = DigitClassifier(10, 32, 128)
    loss = distill(fresh, c0)
    assert float(loss) > 0.1
    c0.zero_grad(set_to_none=True)
    loss.backward()  # the student gets the gradient, the teacher none
    assert fresh.head.weight.grad.abs().sum() > 0 and c0.head.weight.grad is None
    assert "distill" not in fingerprints.embedding_loss(c0, real, labels, fixed, fingerprints.LossWeights(),
                                                        fingerprints.AugmentSettings(),
                                                        torch.Generator().manual_seed(0), False)
    with pytest.raises(ValueError, match="teacher"):
        distill(fresh, None)


# ---- attacks


def test_magnitude_pruning_is_torchs_global_l1_mask_and_reaches_exported_programs(tmp_path) -> None:
    from torch.nn.utils import prune

    from lightning_modules.gan_fingerprint.generator_files import load_generator
    from lightning_modules.gan_fingerprint.i2i import SuperResolver

    g = Generator(16, 16).eval()
    before = commitment.weights_hash(g)
    pruned = attacks.magnitude_pruned(g, 0.3)
    reference = copy.deepcopy(g)
    targets = [(m, "weight") for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.3)
    for module, name in targets:
        prune.remove(module, name)
    assert commitment.weights_hash(pruned) == commitment.weights_hash(reference)  # the library's mask exactly
    weights = [m.weight for m, _ in targets]
    assert sum(int((w == 0).sum()) for w in weights) == round(0.3 * sum(w.numel() for w in weights))
    assert commitment.weights_hash(g) == before  # a copy: G untouched
    # A torch.export program (how an image-to-image generator is handed over) is pruned through its parameters.
    sr = SuperResolver(8).eval()
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    torch.export.save(torch.export.export(sr, (x,)), str(tmp_path / "g.pt2"))
    loaded = load_generator(str(tmp_path / "g.pt2"), "g", allow_torchscript=False)
    kernels = [p for n, p in attacks.magnitude_pruned(loaded, 0.5).named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in kernels)
    assert zeros == round(0.5 * sum(w.numel() for w in kernels)) and len(kernels) == 3


def test_output_perturbations_keep_shape_and_range() -> None:
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    for kind, strength in (
        (attacks.OutputPerturbation.noise, 0.1),
        (attacks.OutputPerturbation.blur, 3),
        (attacks.OutputPerturbation.jpeg, 75),
        (attacks.OutputPerturbation.quantise, 8),
    ):
        out = attacks.perturb(images, kind, strength)
        assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert len(torch.unique(attacks.perturb(images, attacks.OutputPerturbation.quantise, 4))) <= 4
    jpeg = attacks.perturb(images, attacks.OutputPerturbation.jpeg, 95)
    assert (jpeg - images).abs().mean() < 0.2


def test_digits_fid_ranks_real_above_noise(tiny: dict) -> None:
    real = tiny["val"][0]
    c0 = tiny["c0"]
    noise = torch.rand(270, 1, 8, 8) * 2 - 1
    assert attacks.digits_fid(c0, real[:135], real[135:]) < attacks.digits_fid(c0, real, noise)


# ---- bad inputs through train.py: one line, exit 2


def _error_line(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert train_cli(*args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.num_fingerprints=10", "model.verify.p0=0.5"], "use N >= 20"),
        (["model.verify.p0=1.2"], "p0=1.2 must lie strictly between 0 and 1"),
        (["data.population.independent_seeds=[1,5,6]"], "appear in both reference_seeds and independent_seeds"),
    ],
)
def test_bad_inputs_one_line(overrides: list, expected: str, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    line = _error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "logger=none", *overrides)
    assert expected in line


def test_missing_key_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    config = tmp_path / "no_key.yaml"
    config.write_text("method: gan_fingerprint\n")
    line = _error_line(capsys, "--config", str(config), f"run.root={tmp_path}", "logger=none")
    assert "model.secret_key" in line


def test_paper_config_names_the_data_keys(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("TENFOLD_FINGERPRINT_KEY", "k")
    line = _error_line(capsys, "--config", "configs/gan_fingerprint.yaml", f"run.root={tmp_path}", "logger=none")
    assert "data.root" in line
