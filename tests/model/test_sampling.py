"""Classifier-free guidance and the sampling filters, against their definitions; each row's own random generator."""

import pytest
import torch

from model.sampling import classifier_free_guidance, filter_logits, next_tokens, row_generators

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
    sampled = next_tokens(logits, 1.0, 3, 0.0, row_generators(range(64)))
    top3 = logits.topk(3).indices
    assert (sampled[:, None] == top3).any(dim=-1).all()


@pytest.mark.parametrize("top_k", [0, 10], ids=["whole-vocabulary", "top-k"])
def test_each_row_draws_from_its_own_generator_whatever_its_company(top_k):
    # Rows of 16 codebooks: two rows drawing all 16 alike by chance is beyond any test run's luck.
    logits = torch.randn(3, 16, 50, generator=torch.Generator().manual_seed(1))
    seeds = [7, 8, 9]
    batch = next_tokens(logits, 1.0, top_k, 0.0, row_generators(seeds))
    for row, seed in enumerate(seeds):
        alone = next_tokens(logits[row : row + 1], 1.0, top_k, 0.0, row_generators([seed]))
        assert torch.equal(batch[row], alone[0])
    reordered = next_tokens(logits[[2, 0]], 1.0, top_k, 0.0, row_generators([9, 7]))
    assert torch.equal(reordered, batch[[2, 0]])
    same_logits = logits[[0, 0]]
    twins = next_tokens(same_logits, 1.0, top_k, 0.0, row_generators([7, 8]))
    assert torch.equal(twins[0], batch[0]) and not torch.equal(twins[0], twins[1])  # another seed, other draws
    with pytest.raises(ValueError, match="2 random generators for 3 rows"):
        next_tokens(logits, 1.0, top_k, 0.0, row_generators([1, 2]))
