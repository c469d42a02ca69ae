"""ssl_trajectory maths: the trajectory loss unit cases, the pose geometry, the kNN and the backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_modules.ssl_trajectory.knn import KnnSetting, knn_predict, per_group_accuracy, select_on_val
from lightning_modules.ssl_trajectory.net import build_backbone, patch_norm
from lightning_modules.ssl_trajectory.poses import (
    angle_deg,
    fibonacci_sphere,
    from_azimuth_elevation,
    nearest_neighbour_angles,
    reflect_through,
    to_azimuth_elevation,
    triplet_poses,
)
from lightning_modules.ssl_trajectory.trajectory_loss import (
    official_pose_loss,
    trajectory_cosine,
    trajectory_geodesic,
    trajectory_loss,
)


def _arc(theta_deg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = math.radians(theta_deg)
    z_c = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    z_l = torch.tensor([[math.cos(t), -math.sin(t), 0.0]], dtype=torch.float64)
    z_r = torch.tensor([[math.cos(t), math.sin(t), 0.0]], dtype=torch.float64)
    return z_l, z_c, z_r


@pytest.mark.parametrize("theta", [1.0, 10.0, 30.0, 60.0, 89.0])
def test_ordered_geodesic_triplet_is_minus_one(theta: float) -> None:
    assert trajectory_loss(*_arc(theta)).item() == pytest.approx(-1.0, abs=1e-4)  # eps / sin²θ at 1°


def test_fold_back_is_plus_one_and_orthogonal_turn_is_zero() -> None:
    z_l, z_c, _ = _arc(30.0)
    assert trajectory_loss(z_l, z_c, z_l).item() == pytest.approx(1.0, abs=1e-6)
    t = math.radians(30.0)
    z_r = torch.tensor([[math.cos(t), 0.0, math.sin(t)]], dtype=torch.float64)
    assert trajectory_loss(z_l, z_c, z_r).item() == pytest.approx(0.0, abs=1e-6)


def test_without_the_tangent_projection_an_ordered_triplet_scores_minus_cos_theta() -> None:
    # The reason for the projection: the chords of an arc meet at an angle.
    assert trajectory_cosine(*_arc(30.0), project=False).item() == pytest.approx(-math.cos(math.radians(30)), abs=1e-6)


def test_official_release_form_has_the_opposite_sign_and_no_normalisation() -> None:
    z_l, z_c, z_r = _arc(30.0)
    assert official_pose_loss(z_l, z_c, z_r).item() == pytest.approx(0.25, abs=1e-6)
    assert official_pose_loss(z_l, z_c, z_l).item() == pytest.approx(-0.25, abs=1e-6)


def test_invariant_to_scale_rotation_and_batch_order_and_bounded() -> None:
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(64, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    per = trajectory_cosine(*x)
    assert per.abs().max() <= 1.0 + 1e-12
    scales = torch.rand(64, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(trajectory_cosine(*(v * scales for v in x)), per)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    torch.testing.assert_close(trajectory_cosine(*(v @ q for v in x)), per)
    perm = torch.randperm(64, generator=g)
    torch.testing.assert_close(trajectory_loss(*(v[perm] for v in x)), trajectory_loss(*x))


def test_accepts_feature_maps_row_wise() -> None:
    x = [torch.randn(4, 8, 3, 3) for _ in range(3)]
    torch.testing.assert_close(trajectory_cosine(*x), trajectory_cosine(*(v.flatten(1) for v in x)))


def test_degenerate_triplets_give_finite_values_and_gradients() -> None:
    z_l, z_c, z_r = (v.clone().requires_grad_(True) for v in _arc(30.0))
    for triplet in ((z_c, z_c, z_r), (z_c, z_c, z_c), (torch.zeros_like(z_c), z_c, z_r)):
        leaves = [t if t.requires_grad else t.requires_grad_(True) for t in triplet]
        for loss_fn in (trajectory_loss, lambda *a: trajectory_loss(*a, geodesic=True)):
            loss = loss_fn(*leaves)
            grads = torch.autograd.grad(loss, [v for v in leaves if v.requires_grad], allow_unused=True)
            assert torch.isfinite(loss)
            assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_a_gradient_step_lowers_the_loss() -> None:
    g = torch.Generator().manual_seed(1)
    z_l, z_c, _ = _arc(30.0)
    z_r = (z_l + 0.2 * torch.randn(1, 3, generator=g, dtype=torch.float64)).requires_grad_(True)  # nearly folded
    before = trajectory_loss(z_l, z_c, z_r)
    (grad,) = torch.autograd.grad(before, z_r)
    after = trajectory_loss(z_l, z_c, z_r.detach() - 0.05 * grad)
    assert after.item() < before.item() - 1e-4


def test_geodesic_variant_is_zero_on_the_arc_and_positive_off_it() -> None:
    assert trajectory_geodesic(*_arc(20.0)).item() == pytest.approx(0.0, abs=1e-6)
    z_l, z_c, _ = _arc(20.0)
    assert trajectory_geodesic(z_l, z_c, z_l).item() > 0.1


# ---- geometry


def test_fibonacci_50_nearest_neighbour_angles() -> None:
    poses = fibonacci_sphere(50)
    assert poses.shape == (50, 3)
    np.testing.assert_allclose(np.linalg.norm(poses, axis=1), 1.0, atol=1e-12)
    nn = nearest_neighbour_angles(poses)
    assert nn.min() == pytest.approx(25.2, abs=0.3) and nn.mean() == pytest.approx(27.0, abs=0.5)


def test_azimuth_elevation_round_trip() -> None:
    poses = fibonacci_sphere(100)
    np.testing.assert_allclose(from_azimuth_elevation(to_azimuth_elevation(poses)), poses, atol=1e-12)


def test_triplets_are_symmetric_coplanar_and_within_range() -> None:
    centre = fibonacci_sphere(50)
    left, centre, right = triplet_poses(centre, 10.0, 20.0, np.random.default_rng(0))
    step_l, step_r = angle_deg(left, centre), angle_deg(centre, right)
    np.testing.assert_allclose(step_l, step_r, atol=1e-6)
    assert step_l.min() >= 10 - 1e-9 and step_l.max() <= 20 + 1e-9
    np.testing.assert_allclose(np.linalg.norm(right, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ij,ij->i", np.cross(left, centre), right), 0.0, atol=1e-12)
    np.testing.assert_allclose(reflect_through(right, centre), left, atol=1e-12)  # an involution


# ---- kNN


def test_knn_k1_cosine_and_euclidean_agree_on_normalised_features() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(25, 8, generator=g), dim=1)
    labels = torch.randint(0, 5, (40,), generator=g)
    cos = knn_predict(bank, labels, queries, 5, KnnSetting(1, "cosine", 0.1))
    euc = knn_predict(bank, labels, queries, 5, KnnSetting(1, "euclidean"))
    assert torch.equal(cos, euc)


def test_knn_counts_classes_from_the_table_and_clamps_k() -> None:
    bank = torch.eye(3)
    labels = torch.tensor([7, 8, 9])  # labels absent from the queries' classes are still valid columns
    pred = knn_predict(bank, labels, torch.eye(3), 50, KnnSetting(200, "cosine", 0.01))
    assert pred.tolist() == [7, 8, 9]


def test_pose_knn_is_per_category() -> None:
    # Two categories share the same features but opposite pose labels: a pooled kNN would be at chance.
    bank = torch.eye(4).repeat(2, 1)
    poses = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    groups = torch.tensor([0] * 4 + [1] * 4)
    acc = per_group_accuracy(bank, poses, groups, bank, poses, groups, 4, KnnSetting(1, "cosine", 0.1))
    assert acc == 1.0


def test_validation_selection_is_deterministic() -> None:
    a, b, c = KnnSetting(10, "cosine", 0.1), KnnSetting(20, "cosine", 0.1), KnnSetting(10, "euclidean")
    assert select_on_val({a: 0.5, b: 0.7, c: 0.7}) == b


# ---- backbone


def test_backbone_is_resnet18_with_cifar_stem_and_three_feature_layers() -> None:
    import torchvision

    net = build_backbone(64)
    reference = torchvision.models.resnet18()
    n_ref = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith(("conv1", "fc")))
    n_own = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("conv1"))
    assert n_own == n_ref and net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert set(net.state_dict()) <= set(reference.state_dict())  # torchvision's names: imagenet_init loads
    feats = net.eval().features(torch.randn(2, 3, 32, 32))
    assert feats["layer3"].shape == (2, 256, 8, 8) and feats["layer4"].shape == (2, 512, 4, 4)
    assert feats["pooled"].shape == (2, 512)
    torch.testing.assert_close(net(torch.zeros(1, 3, 32, 32)), net.features(torch.zeros(1, 3, 32, 32))["pooled"])


def test_narrow_backbone_and_patch_norm() -> None:
    feats = build_backbone(16).eval().features(torch.randn(2, 3, 16, 16))
    assert feats["layer3"].shape == (2, 64, 4, 4) and feats["pooled"].shape == (2, 128)
    flat = patch_norm(torch.rand(2, 64, 4, 4) + 0.1).view(2, 64, 16)
    torch.testing.assert_close(flat.norm(dim=2), torch.ones(2, 64))
