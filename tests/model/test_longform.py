"""Long-form generation past the context, and continuation of a prompt."""

import numpy as np
import pytest
import torch

from model import GenerationParams

pytestmark = pytest.mark.unit


def test_long_form_has_the_requested_length(micro):
    # the micro model's context is 1 s with an 0.6 s stride: 2.3 s takes four windows
    params = GenerationParams(duration=2.3, seed=3)
    result = micro.generate(["slow ambient pads"], params)
    assert result.codes.shape == (1, micro.num_codebooks, micro.frames_for(2.3))
    assert result.audio.shape == (1, round(2.3 * micro.sample_rate))
    # the first window is exactly what a single-window generation with the same seed gives
    single = micro.generate(["slow ambient pads"], GenerationParams(duration=1.0, seed=3))
    assert torch.equal(result.codes[:, :, : single.codes.shape[2]], single.codes)


def test_long_form_windows_continue_the_previous_tail(micro):
    params = GenerationParams(duration=1.6, temperature=0.0)
    codes = micro.generate(["x"], params).codes
    context, stride = micro.frames_for(1.0), micro.frames_for(0.6)
    # the second window is the greedy continuation of the first window's last (context - stride) frames
    tail = codes[:, :, stride:context]
    expected = torch.cat(list(micro.iter_frames(["x"], GenerationParams(duration=0.6, temperature=0.0), tail)), dim=2)
    assert torch.equal(codes[:, :, context:], expected)


def test_greedy_continuation_of_a_greedy_prefix_reproduces_the_rest(micro):
    params = GenerationParams(duration=0.8, temperature=0.0)
    whole = micro.generate(["bossa nova"], params).codes
    prefix = whole[:, :, :15]
    rest = torch.cat(
        list(micro.iter_frames(["bossa nova"], GenerationParams(duration=0.5, temperature=0.0), prefix)), dim=2
    )
    assert torch.equal(rest, whole[:, :, 15:40])


def test_audio_prompt_is_kept_and_continued(micro):
    prompt_audio = micro.generate(["a"], GenerationParams(duration=0.4, seed=0)).audio
    result = micro.generate(["a"], GenerationParams(duration=0.5, seed=1), audio_prompt=prompt_audio)
    assert result.audio.shape == (1, prompt_audio.shape[1] + round(0.5 * micro.sample_rate))
    prompt_codes = micro.encode_audio(prompt_audio)
    assert torch.equal(result.codes[:, :, : prompt_codes.shape[2]], prompt_codes)
    assert np.isfinite(result.audio).all()
