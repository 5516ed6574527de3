"""Turning the decoder's logits into tokens: classifier-free guidance, temperature, top-k, top-p.

Each row of a batch (one prompt: its codebooks, after guidance) draws from its own random generator, so a
row's tokens do not depend on which rows share its batch (model/generation_params.py says how rows get seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def classifier_free_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond): scale 1 is the conditional model, larger follows the text more."""
    return unconditional + scale * (conditional - unconditional)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p (0 turns either off).

    Both filters apply when both are set (top-k first), as in transformers' generate.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the most likely one always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One random generator per row, seeded with that row's seed."""
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generators: Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """One token per vector of logits [rows, ..., vocab]: argmax when temperature is 0, else a filtered sample.

    `generators` holds one generator per row (the first dimension): row i draws from generators[i] only.
    None draws from torch's global generator."""
    if generators is not None and len(generators) != logits.shape[0]:
        raise ValueError(f"{len(generators)} random generators for {logits.shape[0]} rows of logits")
    if temperature == 0:
        return logits.argmax(dim=-1)
    if 0 < top_k < logits.shape[-1]:
        # Sample among the k candidates only: the same distribution as masking the rest to -inf,
        # without a softmax and a draw over the whole vocabulary at every step.
        values, candidates = torch.topk(logits, top_k, dim=-1)
        choice = _draw(filter_logits(values / temperature, 0, top_p), generators)
        return candidates.gather(-1, choice[..., None])[..., 0]
    return _draw(filter_logits(logits / temperature, 0, top_p), generators)


def _draw(logits: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    probs = logits.softmax(dim=-1)
    vocab = logits.shape[-1]
    if generators is None:
        return torch.multinomial(probs.reshape(-1, vocab), 1).reshape(logits.shape[:-1])
    # One draw per row, each from its row's generator over that row's vectors alone: a row alone in a batch
    # makes exactly the call it makes here, so its company cannot change what it draws.
    drawn = [
        torch.multinomial(row.reshape(-1, vocab), 1, generator=generator)
        for row, generator in zip(probs, generators, strict=True)
    ]
    return torch.stack(drawn).reshape(logits.shape[:-1])
