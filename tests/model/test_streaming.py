"""Streaming: chunks arrive early and, concatenated, match the audio decoded in one piece.

Tolerance: the largest sample difference stays below 1e-3 of the clip's peak. The codec's
convolutions see `left_context` frames of real history and the LSTM starts from that window, so
chunks are not bit-identical to one full decode; crossfades sit inside the held-back lookahead.
"""

import numpy as np
import pytest

from model import GenerationParams, ModelInputError

pytestmark = pytest.mark.unit

TOLERANCE = 1e-3


@pytest.mark.parametrize("duration", [0.3, 1.7])
def test_streamed_equals_generated(micro, duration):
    params = GenerationParams(duration=duration, seed=5)
    whole = micro.generate(["techno with synth bass"], params).audio
    chunks = list(micro.stream(["techno with synth bass"], params))
    assert len(chunks) >= 2
    streamed = np.concatenate(chunks, axis=1)
    assert streamed.shape == whole.shape
    assert np.max(np.abs(streamed - whole)) <= TOLERANCE * np.max(np.abs(whole))


def test_first_chunk_comes_as_early_as_the_delay_pattern_allows(micro):
    frames_seen = []
    params = GenerationParams(duration=1.0, seed=1)
    stream = micro.stream(["a"], params, progress=lambda done, total: frames_seen.append(done))
    first = next(stream)
    # the first frame is complete after K steps; the decoder then holds back `lookahead` (2) frames
    assert frames_seen[-1] == 1 + 2
    assert first.shape[1] == micro.hop_length
    stream.close()


def test_small_chunks_and_long_context_also_match(micro):
    params = GenerationParams(duration=1.2, seed=2)
    whole = micro.generate(["b"], params).audio
    chunks = list(micro.stream(["b"], params, chunk_frames=4, left_context=10, lookahead=1, crossfade=64))
    assert np.max(np.abs(np.concatenate(chunks, axis=1) - whole)) <= TOLERANCE * np.max(np.abs(whole))


def test_streaming_refuses_beams(micro):
    with pytest.raises(ModelInputError, match="num_beams"):
        next(micro.stream(["a"], GenerationParams(duration=0.2, num_beams=2)))
