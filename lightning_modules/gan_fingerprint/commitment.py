"""The commitment lodged at registration: sha256 over a canonical serialisation [P: commitments; R: format].

c = H(serialise(X, Y, C*, H(G), nonce, timestamp)). Every part is written as a tag, its length and its
bytes; tensors as dtype, shape and little-endian contiguous bytes; a state dict in sorted key order.
So any change of one bit of any committed part changes c, and two runs with the same parts agree.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from lightning_modules.gan_fingerprint.errors import VerificationError


def _field(tag: str, payload: bytes) -> bytes:
    return tag.encode() + struct.pack("<Q", len(payload)) + payload


def tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    head = f"{t.dtype}|{tuple(t.shape)}".encode()
    return _field("dtype-shape", head) + _field("data", t.reshape(-1).view(torch.uint8).numpy().tobytes())


def state_bytes(module: nn.Module) -> bytes:
    state = module.state_dict()
    return b"".join(_field(name, tensor_bytes(state[name])) for name in sorted(state))


def weights_hash(module: nn.Module) -> str:
    """H(G): sha256 of every parameter and buffer, bit for bit."""
    return hashlib.sha256(state_bytes(module)).hexdigest()


def canonical_bytes(
    x: Tensor, y: Tensor, classifier: nn.Module, generator_hash: str, nonce: str, timestamp: str
) -> bytes:
    return b"".join(
        [
            _field("X", tensor_bytes(x)),
            _field("Y", tensor_bytes(y)),
            _field("C", state_bytes(classifier)),
            _field("HG", generator_hash.encode()),
            _field("nonce", nonce.encode()),
            _field("time", timestamp.encode()),
        ]
    )


@dataclass(frozen=True)
class Commitment:
    digest: str
    generator_hash: str
    nonce: str
    timestamp: str

    def to_plain(self) -> dict:
        return asdict(self)


def commit(
    x: Tensor,
    y: Tensor,
    classifier: nn.Module,
    generator: nn.Module,
    nonce: str | None = None,
    timestamp: str | None = None,
) -> Commitment:
    """Register (X, Y, C*, H(G)); the nonce is fresh randomness unless given (tests)."""
    nonce = nonce if nonce is not None else secrets.token_hex(16)
    timestamp = timestamp if timestamp is not None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    g_hash = weights_hash(generator)
    digest = hashlib.sha256(canonical_bytes(x, y, classifier, g_hash, nonce, timestamp)).hexdigest()
    return Commitment(digest, g_hash, nonce, timestamp)


def check_commitment(registered: Commitment, x: Tensor, y: Tensor, classifier: nn.Module) -> None:
    """Recompute c from the evidence presented; any substitution of X, Y or C* fails here."""
    digest = hashlib.sha256(
        canonical_bytes(x, y, classifier, registered.generator_hash, registered.nonce, registered.timestamp)
    ).hexdigest()
    if digest != registered.digest:
        raise VerificationError(
            f"commitment mismatch: the fingerprints, labels or classifier presented hash to "
            f"{digest[:16]}..., the registration says {registered.digest[:16]}... "
            "(tampered or substituted evidence)"
        )


def registration_record(
    c: Commitment,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    output_shape: tuple[int, ...],
    input_kind: str,
    design: str,
    p0: dict | None = None,
) -> dict:
    """What the verifier keeps beside the digest (`registration.json`): how to query a suspect and read it."""
    record = {
        **c.to_plain(),
        "design": design,
        "num_fingerprints": len(y),
        "num_classes": num_classes,
        "output_shape": list(output_shape),
        "input": input_kind,
        "input_shape": list(x.shape[1:]),
    }
    if p0 is not None:  # the owner's estimate from its held-out independent generators
        record["p0"] = p0
    return record
