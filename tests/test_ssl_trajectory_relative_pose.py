"""The relative-pose probe: the camera frames match pybullet's, the bins depend only on the relative camera
rotation, pairs stay within one object, and the probe reads pose information out of features (not noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modules.ssl_trajectory.poses import (
    camera_rotation,
    camera_up,
    fibonacci_sphere,
    relative_direction,
    relative_pose_bins,
)
from lightning_modules.ssl_trajectory.relative_pose import pair_labels, relative_pose_accuracy, sample_pairs
from lightning_modules.ssl_trajectory.render import rotation


def test_camera_rotation_is_the_renderers_look_at_camera() -> None:
    import pybullet as p

    client = p.connect(p.DIRECT)
    try:
        for view in fibonacci_sphere(12):
            matrix = p.computeViewMatrix(
                (3 * view).tolist(), [0, 0, 0], camera_up(view).tolist(), physicsClientId=client
            )
            world_to_camera = np.array(matrix).reshape(4, 4).T[:3, :3]  # pybullet is column-major
            np.testing.assert_allclose(camera_rotation(view)[0], world_to_camera, atol=1e-6)
    finally:
        p.disconnect(client)
    r = camera_rotation(fibonacci_sphere(50))
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_relative_bins_depend_only_on_the_relative_camera_pose() -> None:
    views = fibonacci_sphere(50)
    i, j = np.meshgrid(np.arange(50), np.arange(50), indexing="ij")
    i, j = i[i != j], j[i != j]
    bins = relative_pose_bins(views[i], views[j])
    # Turning both cameras about the world up axis (a change of the object's azimuth) keeps every bin.
    turn = rotation(1, 37.0)
    np.testing.assert_array_equal(relative_pose_bins(views[i] @ turn.T, views[j] @ turn.T), bins)
    # The same view is "straight behind the camera" (0, 0, 1); a step to the camera's right has x > 0.
    np.testing.assert_allclose(relative_direction(views, views), np.tile([0.0, 0.0, 1.0], (50, 1)), atol=1e-12)
    right = camera_rotation(views[7])[0, 0]
    step = np.cos(0.2) * views[7] + np.sin(0.2) * right
    assert relative_direction(views[7], step)[0] == pytest.approx([np.sin(0.2), 0.0, np.cos(0.2)], abs=1e-12)
    # All 50 bins occur among the Fib(50) pairs, none far above its equal share.
    counts = np.bincount(bins, minlength=50)
    assert (counts > 0).all() and counts.max() < 1.5 * len(bins) / 50


def test_pairs_are_two_different_views_of_one_instance() -> None:
    groups = torch.tensor([0, 0, 0, 5, 5, 9, 2, 2, 2, 2])  # instance 9 has one view: never paired
    first, second = sample_pairs(groups, 500, seed=3)
    assert len(first) == 500 and bool((first != second).all()) and bool((groups[first] == groups[second]).all())
    assert 9 not in groups[first].tolist()
    assert set(groups[first].tolist()) == {0, 5, 2}
    again = sample_pairs(groups, 500, seed=3)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert [len(x) for x in sample_pairs(torch.tensor([1, 2, 3]), 10, seed=0)] == [0, 0]
    directions = torch.from_numpy(fibonacci_sphere(10))
    np.testing.assert_array_equal(
        pair_labels(directions, first, second, 50).numpy(),
        relative_pose_bins(directions[first].numpy(), directions[second].numpy()),
    )


def _views(instances: int) -> tuple[torch.Tensor, torch.Tensor]:
    poses = torch.from_numpy(fibonacci_sphere(50))
    return poses.repeat(instances, 1), torch.arange(instances).repeat_interleave(50)


def test_probe_reads_relative_pose_from_pose_features_and_not_from_noise() -> None:
    (bank_dir, bank_inst), (test_dir, test_inst) = _views(6), _views(3)
    g = torch.Generator().manual_seed(0)
    weights, phase = torch.randn(3, 64, generator=g) * 3, torch.rand(64, generator=g) * 6.28

    def informative(d: torch.Tensor) -> torch.Tensor:  # random Fourier features of the view vector
        return torch.cos(d.float() @ weights + phase)

    def noise(d: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(d), 64, generator=g)

    scores = {}
    for name, features in (("pose", informative), ("noise", noise)):
        accuracy, majority = relative_pose_accuracy(
            (features(bank_dir), bank_dir, bank_inst),
            {"test": (features(test_dir), test_dir, test_inst)},
            n_pairs=1024,
            n_bins=50,
            steps=100,
            seed=0,
        )
        scores[name] = accuracy["test"]
    assert majority["test"] < 0.05  # 50 nearly balanced bins
    assert scores["pose"] > 3 * majority["test"] and scores["noise"] < 2 * majority["test"]
