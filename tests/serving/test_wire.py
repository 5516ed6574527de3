"""serving/wire.py: the one PCM16, WAV, base64 and Server-Sent Events encoding both servers use."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from serving.wire import pcm16, pcm16_base64, sse, wav_base64, wav_bytes

pytestmark = pytest.mark.unit


def test_pcm16_rounds_to_the_nearest_step_and_clips():
    audio = np.array([0.0, 0.99999, -0.99999, 0.6 / 32767, -0.6 / 32767, 1.5, -1.5], dtype=np.float32)
    samples = np.frombuffer(pcm16(audio), dtype="<i2")
    # Truncation would give 32766, -32766, 0 and 0 for the second to fifth values.
    assert samples.tolist() == [0, 32767, -32767, 1, -1, 32767, -32767]


def test_a_wav_file_carries_the_samples_a_stream_carries():
    rate = 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)).astype(np.float32)
    wav = wav_bytes(audio, rate)
    read, read_rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert wav[:4] == b"RIFF" and read_rate == rate and read.ndim == 1
    np.testing.assert_array_equal(read, np.frombuffer(pcm16(audio), dtype="<i2"))
    assert base64.b64decode(wav_base64(audio, rate)) == wav
    assert base64.b64decode(pcm16_base64(audio)) == pcm16(audio)


def test_sse_frames_one_message_with_an_optional_event_name():
    assert sse('{"a": 1}') == 'data: {"a": 1}\n\n'
    assert sse("AAAA", "chunk") == "event: chunk\ndata: AAAA\n\n"
    assert sse("one\ntwo", "note") == "event: note\ndata: one\ndata: two\n\n"  # a line break would end the field
