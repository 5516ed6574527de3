"""Audio I/O: WAV round trip, atomic writes, resampling, loudness normalisation."""

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from model import ModelInputError
from model.audio import normalize_loudness, read_audio, write_audio

pytestmark = pytest.mark.unit


def _tone(seconds=1.0, rate=32_000, amplitude=0.1):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_wav_round_trip_and_no_temp_files(tmp_path):
    path = write_audio(tmp_path / "a.wav", _tone(), 32_000)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (32_000, 1, 32_000, "PCM_16")
    assert np.allclose(read_audio(path, 32_000), _tone(), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_read_resamples_and_mixes_to_mono(tmp_path):
    stereo = np.stack([_tone(rate=16_000), _tone(rate=16_000)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, 16_000)
    audio = read_audio(tmp_path / "s.wav", 32_000)
    assert audio.shape == (32_000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 32_000 / len(audio) - 440) < 2


def test_flac_and_unknown_formats(tmp_path):
    write_audio(tmp_path / "a.flac", _tone(), 32_000)
    assert sf.info(str(tmp_path / "a.flac")).format == "FLAC"
    with pytest.raises(ModelInputError, match=r"\.wav or \.flac"):
        write_audio(tmp_path / "a.mp3", _tone(), 32_000)


def test_unreadable_audio_is_named(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ModelInputError, match="cannot read audio"):
        read_audio(tmp_path / "bad.wav", 32_000)


def test_loudness_normalisation_reaches_the_target():
    out = normalize_loudness(_tone(2.0), 32_000, target_lufs=-20.0)
    assert pyloudnorm.Meter(32_000).integrated_loudness(out.astype(np.float64)) == pytest.approx(-20.0, abs=0.1)
    loud = normalize_loudness(_tone(2.0), 32_000, target_lufs=0.0)
    assert np.max(np.abs(loud)) < 1.0  # peak-limited, never clipped
    silence = np.zeros(32_000, dtype=np.float32)
    assert normalize_loudness(silence, 32_000) is silence
