"""open_clip models for the zero-shot classifier: an explicit (architecture, weights source) map, local
checkpoints or cached tags only, and the tokenizer with its bundled BPE (no download).

OpenAI and MetaCLIP weights were trained with QuickGELU; loading them from a local file under the plain
`ViT-B-32` config silently uses nn.GELU and gives wrong accuracy (open_clip#771), so those sources map to
the `-quickgelu` architecture and the choice is logged.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import open_clip
import torch
from torch import nn

from lightning_modules.mpvr.config import ClipConfig, WeightsSource
from tenfold.errors import ConfigError

log = logging.getLogger("tenfold")

QUICKGELU_SOURCES = (WeightsSource.openai, WeightsSource.metaclip)


def resolve_arch(cfg: ClipConfig) -> str:
    """The open_clip architecture actually built for (model.arch, model.weights)."""
    if cfg.arch == "custom":
        return "custom"
    base = cfg.arch.removesuffix("-quickgelu")
    if base not in open_clip.list_models():
        raise ConfigError(f"model.arch={cfg.arch!r} is not an open_clip architecture (e.g. ViT-B-32, ViT-B-16, "
                          "ViT-L-14), nor 'custom'")
    arch = base + "-quickgelu" if cfg.weights in QUICKGELU_SOURCES else base
    if arch != cfg.arch:
        log.info("model.arch=%s with model.weights=%s: building %s", cfg.arch, cfg.weights.value, arch)
    return arch


def build_clip(cfg: ClipConfig) -> nn.Module:
    """An open_clip CLIP in fp32 on the CPU; pretrained weights from a local file or a cached tag."""
    arch = resolve_arch(cfg)
    if arch == "custom":
        if not cfg.custom:
            raise ConfigError("model.arch=custom needs model.custom (open_clip.CLIP kwargs: embed_dim, vision_cfg, "
                              "text_cfg)")
        model = open_clip.CLIP(**_plain(cfg.custom))
        if cfg.pretrained:
            model.load_state_dict(_load_state(cfg.pretrained))
        return model.float()
    if cfg.pretrained is None and cfg.weights is not WeightsSource.none:
        raise ConfigError(f"model.pretrained is not set: point it at a local {arch} checkpoint file "
                          f"(e.g. ViT-B-32.pt from OpenAI CLIP), or set model.weights=none for random weights")
    pretrained = None if cfg.weights is WeightsSource.none else cfg.pretrained
    if pretrained and not os.path.isfile(pretrained):
        pretrained = _cached_tag_file(arch, pretrained)
    log.info("open_clip: create_model(%r, pretrained=%r)", arch, pretrained)
    try:
        return open_clip.create_model(arch, pretrained=pretrained, precision="fp32", device="cpu")
    except RuntimeError as exc:
        raise ConfigError(f"model.pretrained={pretrained!r} does not load into {arch}: "
                          f"{str(exc).splitlines()[0][:200]}") from None


def _cached_tag_file(arch: str, tag: str) -> str:
    """The local file of an open_clip tag, from the caches only: a tag that needs a download is an error."""
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise ConfigError(f"model.pretrained={tag!r}: no such file, and not an open_clip tag of {arch} "
                          f"({', '.join(tags[:6])}...); point it at a local checkpoint file")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    path = ""
    if cfg.get("hf_hub"):  # a lookup in the HF hub cache only (no request)
        from huggingface_hub import try_to_load_from_cache

        repo = "/".join(cfg["hf_hub"].strip("/").split("/")[:2])
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                path = found
                break
    if not path and cfg.get("url"):  # open_clip's URL download cache
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
    if not path or not os.path.isfile(path):
        raise ConfigError(f"model.pretrained={tag!r} is an open_clip tag whose weights are not cached here and "
                          "would need a download (offline): fetch the checkpoint elsewhere and set model.pretrained "
                          "to the local file")
    return path


def tokenizer_for(cfg: ClipConfig) -> Any:
    """open_clip's tokenizer (the bundled CLIP BPE, context 77: longer prompts are truncated)."""
    arch = "ViT-B-32" if cfg.arch == "custom" else cfg.arch.removesuffix("-quickgelu")
    return open_clip.get_tokenizer(arch)


def _load_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"model.pretrained={path!r}: no such checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def _plain(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    return tree
