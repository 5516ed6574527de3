"""The delay pattern: our build/revert round-trips and agrees with transformers' own mask."""

import pytest
import torch

from model.delay_pattern import build_delay_pattern, revert_delay_pattern, valid_positions

pytestmark = pytest.mark.unit


def test_round_trip():
    codes = torch.randint(0, 64, (3, 4, 17))
    delayed = build_delay_pattern(codes, special=64)
    assert delayed.shape == (3, 4, 21)
    assert torch.equal(revert_delay_pattern(delayed), codes)


def test_layout_shifts_codebook_k_by_k_plus_one():
    codes = torch.arange(8).reshape(1, 2, 4)  # codebook 0: 0..3, codebook 1: 4..7
    delayed = build_delay_pattern(codes, special=-1)
    assert delayed[0].tolist() == [[-1, 0, 1, 2, 3, -1], [-1, -1, 4, 5, 6, 7]]
    assert valid_positions(2, 6).tolist() == (delayed[0] != -1).tolist()


def test_agrees_with_transformers_build_delay_pattern_mask(micro):
    lm = micro.model.decoder
    special = lm.config.vocab_size
    codes = torch.randint(0, special, (2, 4, 9))
    ours = build_delay_pattern(codes, special)
    # transformers shifts (start token + codes) per codebook; with max_length = frames + K nothing is left to predict
    start = torch.full((2 * 4, 1), special)
    prompt = torch.cat([start, codes.reshape(8, 9)], dim=1)
    _, mask = lm.build_delay_pattern_mask(prompt, pad_token_id=special, max_length=9 + 4)
    assert torch.equal(mask.reshape(2, 4, -1), ours)


def test_the_pattern_is_built_on_the_device_of_the_codes():
    # The meta device stands in for a GPU: a pattern built on the CPU would meet the decoder's CUDA
    # weights in training and fail there.
    codes = torch.zeros(2, 3, 5, dtype=torch.long, device="meta")
    assert build_delay_pattern(codes, special=64).device == codes.device
    assert valid_positions(3, 8, device=codes.device).device == codes.device
