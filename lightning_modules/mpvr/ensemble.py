"""The zero-shot classifier of MPVR (digest §2.1): one unit weight vector per class from many prompts.

    e_i = psi(p_i) / ||psi(p_i)||              every prompt embedding normalised first
    m_c = mean of e_i over the prompts of c     (M_c may differ per class)
    w_c = m_c / ||m_c||                         the mean re-normalised
    s_c(x) = <phi(x) / ||phi(x)||, w_c>         argmax_c s_c is the prediction

Built for all classes at once: the prompts of every class are flattened into one list, encoded in fixed
chunks, and summed per class with `index_add_` (a segment mean) -- no per-class Python loop, no padding,
and never the whole (P, D) matrix in memory.
`class_weights_per_class_loop` is the official code's loop, kept as the reference the tests and the
benchmark compare against. S-TEMP, DS-TEMP and LLM banks all go through `class_weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# texts -> (len(texts), D) raw text embeddings (e.g. open_clip's encode_text on tokenised texts)
TextEncoder = Callable[[Sequence[str]], Tensor]


def segment_class_weights(embeddings: Tensor, class_ids: Tensor, num_classes: int) -> Tensor:
    """(P, D) prompt embeddings and the (P,) class of each -> (C, D) unit class weights."""
    sums = torch.zeros(num_classes, embeddings.shape[1], device=embeddings.device)
    add_unit_embeddings(sums, embeddings, class_ids)
    return mean_direction(sums, class_ids)


def add_unit_embeddings(sums: Tensor, embeddings: Tensor, class_ids: Tensor) -> None:
    """sums[c] += e_i / ||e_i|| for every prompt i of class c (a segment sum)."""
    sums.index_add_(0, class_ids, F.normalize(embeddings.float(), dim=-1))


def mean_direction(sums: Tensor, class_ids: Tensor) -> Tensor:
    """w_c = m_c / ||m_c|| with m_c the mean of class c's unit embeddings."""
    counts = torch.bincount(class_ids, minlength=sums.shape[0]).to(sums)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {empty} have no prompts")
    return F.normalize(sums / counts[:, None], dim=-1)


def flatten_bank(bank: Mapping[str, Sequence[str]], class_names: Sequence[str]) -> tuple[list[str], Tensor]:
    """All prompts in class order, and the class index of each (classes looked up by name)."""
    texts: list[str] = []
    ids: list[int] = []
    for index, name in enumerate(class_names):
        prompts = bank[name]
        texts.extend(prompts)
        ids.extend([index] * len(prompts))
    return texts, torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def class_weights(encode: TextEncoder, bank: Mapping[str, Sequence[str]], class_names: Sequence[str],
                  chunk: int = 1024) -> Tensor:
    """(C, D) classifier of `class_names` from a prompt bank {class name: [prompt, ...]}.

    Streams: each chunk of `chunk` prompts is encoded, normalised and added to its classes' sums, so
    memory is O(C x D) however many prompts there are.
    """
    texts, ids = flatten_bank(bank, class_names)
    sums = None
    for start in range(0, len(texts), chunk):
        embeddings = encode(texts[start:start + chunk]).float()
        if sums is None:
            sums = torch.zeros(len(class_names), embeddings.shape[1], device=embeddings.device)
        add_unit_embeddings(sums, embeddings, ids[start:start + chunk].to(embeddings.device))
    if sums is None:
        raise ValueError("the bank holds no prompts")
    return mean_direction(sums, ids.to(sums.device))


@torch.no_grad()
def class_weights_per_class_loop(encode: TextEncoder, bank: Mapping[str, Sequence[str]],
                                 class_names: Sequence[str]) -> Tensor:
    """The official code's loop (`zeroshot_classifier_gpt`): encode, normalise, mean, renormalise per class."""
    rows = []
    for name in class_names:
        e = F.normalize(encode(bank[name]).float(), dim=-1)
        rows.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(rows)


def ensemble_weights(weights: Sequence[Tensor]) -> Tensor:
    """Several banks' (C, D) classifiers -> one: the mean class vector, renormalised (GPT + Mixtral)."""
    return F.normalize(torch.stack([w.float() for w in weights]).mean(0), dim=-1)


def zero_shot_logits(image_features: Tensor, weights: Tensor, scale: float = 100.0) -> Tensor:
    """(B, D) image features, (C, D) class weights -> (B, C) scaled cosine logits (scale keeps the argmax)."""
    return scale * F.normalize(image_features.float(), dim=-1) @ weights.float().t()
