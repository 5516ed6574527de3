"""Audio-quality features: each one moves the right way on synthetic signals with a known answer."""

import math
import warnings

import numpy as np
import pytest
import soxr

from model import ModelInputError
from model.audio_quality import FEATURES, LOUDNESS_FLOOR_LUFS, SNR_CAP_DB, audio_features, snr_db

pytestmark = pytest.mark.unit

SR = 32_000


def _seconds(seconds: float, rate: int = SR) -> np.ndarray:
    return np.arange(int(seconds * rate)) / rate


def _sine(seconds: float = 3.0, amplitude: float = 0.3, freq: float = 440.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * _seconds(seconds))


def _chord(midi_notes, seconds: float, rate: int = SR) -> np.ndarray:
    # A few decaying harmonics per note, so the chroma has the timbre of an instrument, not pure sines.
    t = _seconds(seconds, rate)
    freqs = [440.0 * 2 ** ((note - 69) / 12) for note in midi_notes]
    tone = sum(np.sin(2 * np.pi * f * k * t) / k**2 for f in freqs for k in (1, 2, 3, 4))
    return 0.1 * tone * np.exp(-t / (2 * seconds))


def _clicks(times, seconds: float, rate: int = SR) -> np.ndarray:
    out = np.zeros(int(seconds * rate))
    length = int(0.01 * rate)
    burst = np.random.default_rng(1).standard_normal(length) * np.exp(-np.arange(length) / (0.002 * rate))
    for start in times:
        i = int(start * rate)
        out[i : i + length] += burst[: len(out[i : i + length])]
    return 0.5 * out / np.max(np.abs(out))


def _song(seconds: float = 8.0, rate: int = SR) -> np.ndarray:
    """I-vi-IV-V in C, one chord a second, over a 120 BPM click track."""
    progression = ([60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62])
    chords = np.concatenate([_chord(progression[i % 4], 1.0, rate) for i in range(int(seconds))])
    return chords + 0.3 * _clicks(np.arange(0.0, seconds, 0.5), seconds, rate)


@pytest.fixture(scope="module")
def song_features() -> dict[str, float]:
    return audio_features(_song(), SR)


def test_every_feature_present_and_finite_for_music(song_features):
    assert list(song_features) == list(FEATURES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in song_features.values()), song_features
    assert song_features["duration_s"] == pytest.approx(8.0)
    assert song_features["silence_share"] == 0.0
    assert song_features["clipping_share"] == 0.0
    assert abs(song_features["tempo_bpm"] - 120) < 5
    assert 0.0 <= song_features["tempo_stability"] <= 1.0
    assert 0.5 < song_features["pitch_stability"] <= 1.0
    assert 0 < song_features["spectral_centroid_hz"] < 11_025


def test_feature_table_matches_features():
    assert set(FEATURES) == set(audio_features(_sine(1.0), SR))
    for info in FEATURES.values():
        assert info.label and info.unit and info.better in ("higher", "lower", None)


def test_harmonic_percussive_ratio_separates_tones_from_noise_and_clicks():
    rng = np.random.default_rng(0)
    sine = audio_features(_sine(), SR)["harmonic_percussive_db"]
    noise = audio_features(0.1 * rng.standard_normal(3 * SR), SR)["harmonic_percussive_db"]
    clicks = audio_features(_clicks(np.arange(0.0, 3.0, 0.25), 3.0), SR)["harmonic_percussive_db"]
    assert sine > 20 and sine > noise + 20 and sine > clicks + 20
    assert clicks == pytest.approx(-60.0, abs=0.01)  # the relative epsilon bounds the ratio


def test_steady_clicks_have_steady_tempo_and_jitter_lowers_stability():
    beats = np.arange(0.0, 8.0, 0.5) + 0.1
    steady = audio_features(_clicks(beats, 8.5), SR)
    jitter = np.random.default_rng(0).uniform(-0.1, 0.1, beats.size)  # up to 20% of the 500 ms period
    jittered = audio_features(_clicks(beats + jitter, 8.5), SR)
    assert abs(steady["tempo_bpm"] - 120) < 5
    assert steady["tempo_stability"] > 0.95
    assert jittered["tempo_stability"] < steady["tempo_stability"] - 0.03


def test_held_chord_is_more_pitch_stable_than_random_chords_or_noise():
    rng = np.random.default_rng(0)
    held = audio_features(_chord([60, 64, 67], 4.0), SR)["pitch_stability"]
    random_chords = np.concatenate([_chord(rng.choice(np.arange(48, 84), 3, replace=False), 0.1) for _ in range(40)])
    shuffled = audio_features(random_chords, SR)["pitch_stability"]
    noise = audio_features(0.1 * rng.standard_normal(4 * SR), SR)["pitch_stability"]
    assert held > 0.95
    assert held > shuffled + 0.2
    assert held > noise + 0.5  # flat noise chroma must not read as a stable pitch


def test_half_silent_audio():
    audio = np.concatenate([_sine(2.0), np.zeros(2 * SR)])
    assert audio_features(audio, SR)["silence_share"] == pytest.approx(0.5, abs=0.03)


def test_clipping_share():
    clipped = np.clip(_sine(amplitude=1.5), -1.0, 1.0)
    assert audio_features(clipped, SR)["clipping_share"] > 0.1
    assert audio_features(_sine(amplitude=0.5), SR)["clipping_share"] == 0.0


def test_loudness_follows_gain_and_floors_silence():
    quiet = audio_features(_sine(amplitude=0.05), SR)["loudness_lufs"]
    loud = audio_features(_sine(amplitude=0.05 * 10 ** (9 / 20)), SR)["loudness_lufs"]
    assert loud - quiet == pytest.approx(9.0, abs=0.1)
    silence = audio_features(np.zeros(3 * SR), SR)
    assert silence["loudness_lufs"] == LOUDNESS_FLOOR_LUFS == -70.0
    assert silence["silence_share"] == 1.0
    # Undefined for silence, by design (documented): no beats, no sounding frames.
    assert all(math.isnan(silence[key]) for key in ("tempo_bpm", "tempo_stability", "pitch_stability"))
    assert audio_features(_sine(0.2), SR)["loudness_lufs"] == -70.0  # shorter than one 400 ms gating block


def test_short_clips_and_other_rates_work_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for samples in (1, 100, 2_000):
            features = audio_features(_sine(1.0)[:samples], SR)
            assert features["duration_s"] == samples / SR
            assert math.isfinite(features["harmonic_percussive_db"])
    # Resampling to the analysis rate keeps the meaning: one recording at 44.1, 32 and 22.05 kHz
    # (the analysis rate itself, which skips resampling) reads alike.
    song = _song(4.0, 44_100)
    by_rate = {rate: audio_features(soxr.resample(song, 44_100, rate, quality="HQ"), rate) for rate in (32_000, 22_050)}
    by_rate[44_100] = audio_features(song, 44_100)
    for key in ("tempo_bpm", "spectral_centroid_hz", "pitch_stability", "harmonic_percussive_db"):
        assert by_rate[32_000][key] == pytest.approx(by_rate[44_100][key], rel=0.02), key
        assert by_rate[22_050][key] == pytest.approx(by_rate[44_100][key], rel=0.02), key
    assert by_rate[32_000]["loudness_lufs"] == pytest.approx(by_rate[44_100]["loudness_lufs"], abs=0.1)


def test_snr_db():
    reference = _sine(1.0)
    assert snr_db(reference, reference) == SNR_CAP_DB
    noise_std = math.sqrt(np.mean(reference**2) / 10 ** (20 / 10))
    noisy = reference + noise_std * np.random.default_rng(0).standard_normal(reference.size)
    assert snr_db(reference, noisy) == pytest.approx(20.0, abs=0.5)
    # A codec's output may be longer than its input: compared over the shorter length.
    assert snr_db(reference, np.concatenate([noisy, np.ones(500)])) == snr_db(reference, noisy)
    assert snr_db(np.zeros(100), np.ones(100)) == -SNR_CAP_DB
    with pytest.raises(ValueError, match="reference is empty"):
        snr_db(np.array([]), reference)
    with pytest.raises(ValueError, match="estimate is empty"):
        snr_db(reference, np.array([]))


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros((2, SR)), SR, "1-D"),
        (np.zeros(0), SR, "empty"),
        (np.array([0.0, np.nan, 0.0]), SR, "NaN or infinite"),
        (np.array([0.0, np.inf]), SR, "NaN or infinite"),
        (np.zeros(SR), 0, "positive"),
        (np.zeros(SR), -16_000, "positive"),
    ],
)
def test_bad_input_is_a_clear_value_error(audio, rate, message):
    with pytest.raises(ModelInputError, match=message):
        audio_features(audio, rate)
    assert issubclass(ModelInputError, ValueError)
