"""ASR on timm's RDNet: each ESE gate is fed a learnable psi and folds into the conv before it.

timm's `BlockESE` is (7x7 dw conv, norm, 1x1 conv, act, 1x1 conv, ESE). ASR turns it into a plain
`Block` whose last 1x1 conv is wrapped in `ASR`; after `reparameterize_model` the network is a
timm RDNet built with `block_type="Block"` in every stage, with the same state-dict keys.
"""

from typing import Any

import timm
from timm.layers import EffectiveSEModule
from timm.models.rdnet import Block, BlockESE, DenseBlock, RDNet
from torch import nn

from lightning_modules.attention_reparam.attention import ASR, EffectiveSqueezeExcite


def apply_asr_to_rdnet(model: RDNet, psi_init: float = 0.1) -> RDNet:
    """Replace, in place, every ESE block of `model` by its ASR form; returns `model`.

    The ESE's 1x1 conv carries over (weights, device, dtype); only the gate's input changes.
    """
    for module in model.modules():
        if isinstance(module, DenseBlock) and isinstance(module.layers, BlockESE):
            module.layers = _asr_block(module.layers, psi_init)
    return model


def _asr_block(block: BlockESE, psi_init: float) -> Block:
    dw_conv, norm, pw_conv1, act, pw_conv2, ese = block.layers
    assert isinstance(ese, EffectiveSEModule) and not ese.add_maxpool, "unexpected timm BlockESE"
    attention = EffectiveSqueezeExcite(pw_conv2.out_channels).to(ese.fc.weight)
    attention.fc.load_state_dict(ese.fc.state_dict())
    # timm's Block cannot adopt existing layers: build an empty one on the meta device (no memory,
    # no init), then put the trained layers in.
    plain = Block(
        dw_conv.in_channels,
        pw_conv1.out_channels,
        pw_conv2.out_channels,
        norm_layer=type(norm),
        act_layer=type(act),
        device="meta",
    )
    plain.layers = nn.Sequential(
        dw_conv, norm, pw_conv1, act, ASR(pw_conv2, attention, psi_init=psi_init)
    )
    return plain


def plain_rdnet_kwargs(name: str, **kwargs: Any) -> dict[str, Any]:
    """timm kwargs that build RDNet `name` without ESE gates: what an ASR RDNet deploys to.

    Use `timm.create_model(name, **kwargs, **plain_rdnet_kwargs(name, **kwargs))`.
    """
    # The stage count depends on the variant and kwargs; read it off a meta-device copy.
    num_stages = timm.create_model(name, pretrained=False, device="meta", **kwargs).num_stages
    return {"block_type": ["Block"] * num_stages}


def create_plain_rdnet(name: str, **kwargs: Any) -> RDNet:
    """timm RDNet `name` with plain blocks only; loads an exported ASR RDNet strictly."""
    return timm.create_model(name, pretrained=False, **kwargs, **plain_rdnet_kwargs(name, **kwargs))
