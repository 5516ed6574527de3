"""Turning the decoder's logits into tokens: classifier-free guidance, temperature, top-k, top-p."""

from __future__ import annotations

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


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token per row of logits [..., vocab]: argmax when temperature is 0, else a filtered sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if 0 < top_k < logits.shape[-1]:
        # Sample among the k candidates only: the same distribution as masking the rest to -inf,
        # without a softmax and a draw over the whole vocabulary at every step.
        values, candidates = torch.topk(logits, top_k, dim=-1)
        choice = _draw(filter_logits(values / temperature, 0, top_p), generator)
        return candidates.gather(-1, choice[..., None])[..., 0]
    return _draw(filter_logits(logits / temperature, 0, top_p), generator)


def _draw(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flat = logits.softmax(dim=-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(logits.shape[:-1])
