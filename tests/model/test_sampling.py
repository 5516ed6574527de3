"""Classifier-free guidance and the sampling filters, against their definitions."""

import pytest
import torch

from model.sampling import classifier_free_guidance, filter_logits, next_tokens

pytestmark = pytest.mark.unit


def test_guidance_combines_as_defined():
    generator = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(3, 4, 10, generator=generator), torch.randn(3, 4, 10, generator=generator)
    for scale in (1.0, 3.0, 7.5):
        expected = uncond + scale * (cond - uncond)
        assert torch.allclose(classifier_free_guidance(cond, uncond, scale), expected)
    # Scale 1 is the conditional logits, up to float32 rounding of uncond + (cond - uncond): an absolute bound,
    # since a logit near zero has no relative precision left after that sum (an unseeded draw once found one).
    assert torch.allclose(classifier_free_guidance(cond, uncond, 1.0), cond, rtol=0, atol=1e-6)


def test_top_k_keeps_exactly_k():
    logits = torch.randn(5, 100)
    kept = torch.isfinite(filter_logits(logits, top_k=7))
    assert kept.sum(dim=-1).tolist() == [7] * 5
    assert torch.equal(kept.nonzero()[:, 1].reshape(5, 7).sort().values, logits.topk(7).indices.sort().values)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.1))  # the likeliest always stays
    assert kept.tolist() == [[True, False, False, False]]


def test_temperature_zero_is_argmax_and_sampling_respects_filters():
    logits = torch.randn(64, 50)
    assert torch.equal(next_tokens(logits, 0.0, 0, 0.0, None), logits.argmax(-1))
    generator = torch.Generator().manual_seed(0)
    sampled = next_tokens(logits, 1.0, 3, 0.0, generator)
    top3 = logits.topk(3).indices
    assert (sampled[:, None] == top3).any(dim=-1).all()
