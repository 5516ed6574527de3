"""The cached decoder gives transformers' logits, step by step and in one prefill."""

import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from model.decoder_step import CachedDecoder, matmul_attention

pytestmark = pytest.mark.unit


def _reference_logits(lm, tokens, states, mask):
    """transformers' own forward, one position at a time with its cache."""
    batch, codebooks, length = tokens.shape
    cache, out = EncoderDecoderCache(DynamicCache(), DynamicCache()), []
    for t in range(length):
        result = lm(
            input_ids=tokens[:, :, t : t + 1].reshape(batch * codebooks, 1),
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            cache=cache,
            use_cache=True,
        )
        cache = result.cache
        out.append(result.logits.reshape(batch, codebooks, -1))
    return out


@torch.inference_mode()
def test_matches_transformers_with_padding_and_unconditional_rows(micro):
    lm = micro.model.decoder
    hidden, vocab = lm.config.hidden_size, lm.config.vocab_size
    states = torch.randn(3, 6, hidden)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0  # a padded prompt
    mask[2] = 0  # the unconditional row: no text at all
    states = states * mask[..., None]
    tokens = torch.randint(0, vocab + 1, (3, 4, 12))
    reference = _reference_logits(lm, tokens, states, mask)

    decoder = CachedDecoder(lm)
    decoder.start(states, mask, capacity=12)
    for t in range(12):
        assert torch.allclose(decoder.step(tokens[:, :, t : t + 1]), reference[t], atol=1e-5)

    decoder.start(states, mask, capacity=12)
    assert torch.allclose(decoder.step(tokens), reference[-1], atol=1e-5)


@torch.inference_mode()
def test_reorder_moves_cache_rows(micro):
    lm = micro.model.decoder
    states = torch.randn(2, 5, lm.config.hidden_size)
    tokens = torch.randint(0, lm.config.vocab_size, (2, 4, 6))
    decoder = CachedDecoder(lm)
    decoder.start(states, None, capacity=6)
    decoder.step(tokens[:, :, :5])
    decoder.reorder(torch.tensor([1, 1]))
    # both rows are now row 1: its history and its text
    swapped = decoder.step(tokens[[1, 1], :, 5:6])
    decoder.start(states[[1, 1]], None, capacity=6)
    decoder.step(tokens[[1, 1], :, :5])
    assert torch.allclose(swapped, decoder.step(tokens[[1, 1], :, 5:6]), atol=1e-5)


@pytest.mark.parametrize("mask", ["none", "boolean", "additive", "causal"])
def test_matmul_attention_is_sdpa(mask):
    # the ONNX export's attention (model.decoder_step.matmul_attention) against torch's own
    generator = torch.Generator().manual_seed(0)
    n = 5 if mask == "causal" else 1
    q, k, v = (torch.randn(2, 3, length, 8, generator=generator) for length in (n, 5, 5))
    kwargs = {
        "none": {},
        "boolean": {"attn_mask": torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None]},
        "additive": {"attn_mask": torch.randn(2, 1, 1, 5, generator=generator)},
        "causal": {"is_causal": True},
    }[mask]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
    assert torch.allclose(matmul_attention(q, k, v, **kwargs), expected, atol=1e-6)
