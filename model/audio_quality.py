"""Reference-free audio-quality and descriptive features of one mono clip, and SNR against a reference.

Evaluation computes `audio_features` for every generated sample and every real clip, and monitoring
for every served request, so it is built to be cheap: about a quarter of a second per 10 s of 32 kHz
audio on a 2-core CPU (see tests/model/test_audio_quality.py for the timing check).

What runs at which rate, and why:

- Duration, loudness, silence and clipping are measured on the audio as given: loudness filters are
  defined per rate, and resampling moves sample peaks, which would change the clipping count.
- Everything spectral is analysed at 22.05 kHz (soxr): librosa's defaults (beat tracker, chroma,
  spectral contrast bands) are tuned for that rate, `model.music_features.estimate_tempo` is used at
  it elsewhere, and it cuts the work by a third against 32 kHz. The spectral centroid and bandwidth
  therefore describe the band below 11 kHz; compare them only between clips measured here.
- One magnitude STFT (2048-point, 46 ms hop) feeds HPSS, chroma, contrast, centroid and bandwidth.
  HPSS's median filters are most of the cost and scale with the number of frames, hence the 46 ms
  hop rather than librosa's 23 ms. Only the beat tracker makes its own (23 ms) onset envelope,
  because `estimate_tempo` owns that computation.

NaN means "not defined for this clip", never an error: `tempo_bpm` when the beat tracker finds no
tempo (silence), `tempo_stability` when fewer than 3 beats are found, and `pitch_stability` and the
spectral means when the clip has no frame above the silence threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.errors import ModelInputError
from model.music_features import estimate_tempo

ANALYSIS_RATE = 22_050
N_FFT = 2048
HOP = 1024  # 46.4 ms at 22.05 kHz
SILENCE_FRAME_S = 0.05
SILENCE_DBFS = -60.0
CLIP_LEVEL = 0.999
# BS.1770's absolute gate drops every 400 ms block quieter than -70 LUFS, so no integrated loudness
# below it can be measured: silence and clips shorter than one block report this floor, not -inf.
LOUDNESS_FLOOR_LUFS = -70.0
SNR_CAP_DB = 100.0
_EPS = 1e-12


@dataclass(frozen=True)
class FeatureInfo:
    """How a report shows one feature: a short label, its unit, and which direction is better
    (None: descriptive only, compared with the reference distribution rather than ranked)."""

    label: str
    unit: str
    better: Literal["higher", "lower"] | None


FEATURES: dict[str, FeatureInfo] = {
    "duration_s": FeatureInfo("Duration", "s", None),
    "loudness_lufs": FeatureInfo("Integrated loudness", "LUFS", None),
    "silence_share": FeatureInfo("Silent frames", "share", "lower"),
    "clipping_share": FeatureInfo("Clipped samples", "share", "lower"),
    "harmonic_percussive_db": FeatureInfo("Harmonic / percussive energy", "dB", None),
    "tempo_bpm": FeatureInfo("Tempo", "BPM", None),
    "tempo_stability": FeatureInfo("Tempo stability", "0-1", "higher"),
    "pitch_stability": FeatureInfo("Pitch (chroma) stability", "0-1", "higher"),
    "spectral_contrast_db": FeatureInfo("Spectral contrast", "dB", None),
    "spectral_centroid_hz": FeatureInfo("Spectral centroid", "Hz", None),
    "spectral_bandwidth_hz": FeatureInfo("Spectral bandwidth", "Hz", None),
}


def _check_audio(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    array = np.asarray(audio)
    if array.ndim != 1:
        raise ModelInputError(f"{name} must be mono, a 1-D array of samples; got shape {array.shape}")
    if array.size == 0:
        raise ModelInputError(f"{name} is empty")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ModelInputError(f"{name} must hold real numbers; got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ModelInputError(f"{name} contains NaN or infinite samples")
    return array.astype(np.float64, copy=False)


def _check_rate(sample_rate: int) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number)):
        raise ModelInputError(f"sample_rate must be a number of samples per second; got {sample_rate!r}")
    if not math.isfinite(sample_rate) or sample_rate <= 0:
        raise ModelInputError(f"sample_rate must be positive; got {sample_rate}")


def loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm) of mono audio, floored at -70 LUFS (the absolute
    gate): silence and clips shorter than one 400 ms gating block return the floor."""
    import pyloudnorm

    audio = _check_audio(audio)
    _check_rate(sample_rate)
    if audio.size < int(0.4 * sample_rate) or not np.any(audio):
        return LOUDNESS_FLOOR_LUFS
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(audio)
    return float(max(loudness, LOUDNESS_FLOOR_LUFS)) if np.isfinite(loudness) else LOUDNESS_FLOOR_LUFS


def _silence_share(audio: np.ndarray, sample_rate: int) -> float:
    # Whole 50 ms frames only: a short tail's RMS says little. A clip shorter than one frame is one frame.
    frame = max(1, round(SILENCE_FRAME_S * sample_rate))
    count = max(1, audio.size // frame)
    frames = audio[: count * frame].reshape(count, -1) if audio.size >= frame else audio[None, :]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.mean(rms < 10.0 ** (SILENCE_DBFS / 20.0)))


def _tempo_stability(audio: np.ndarray, tempo: float) -> float:
    import librosa

    if not np.isfinite(tempo) or tempo <= 0:
        return math.nan
    # Beats from the same tracker at the tempo estimate_tempo found (what beat_track does internally),
    # so the beats and tempo_bpm agree and the tempo is not estimated twice.
    _, beats = librosa.beat.beat_track(y=audio, sr=ANALYSIS_RATE, bpm=tempo, units="time")
    if len(beats) < 3:
        return math.nan
    intervals = np.diff(beats)
    variation = float(np.std(intervals) / np.mean(intervals))
    return float(np.clip(1.0 - variation, 0.0, 1.0))


def _pitch_stability(power: np.ndarray, sounding: np.ndarray) -> float:
    import librosa

    # Only pairs of sounding frames: a silent frame's chroma is numerical noise, not a pitch class.
    pairs = sounding[:-1] & sounding[1:]
    if not np.any(pairs):
        return math.nan
    # tuning=0 skips librosa's tuning estimate: a constant detuning shifts every frame's chroma alike,
    # so it does not change how similar consecutive frames are.
    chroma = librosa.feature.chroma_stft(S=power, sr=ANALYSIS_RATE, n_fft=N_FFT, hop_length=HOP, tuning=0.0)
    # Each frame's mean is removed before the cosine: chroma is non-negative, so the plain cosine of two
    # near-flat frames is high and white noise scored 0.986 against 0.986 for a chord progression; centred,
    # noise scores ~0.26 and the progression 0.97. An anti-correlated pair counts as 0 (nothing shared).
    chroma = chroma - chroma.mean(axis=0, keepdims=True)
    a, b = chroma[:, :-1][:, pairs], chroma[:, 1:][:, pairs]
    cosine = np.sum(a * b, axis=0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), _EPS)
    return float(np.mean(np.clip(cosine, 0.0, 1.0)))


def _analysis_signal(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The clip at the analysis rate, float32, at least one STFT window long."""
    import soxr

    y = audio if sample_rate == ANALYSIS_RATE else soxr.resample(audio, sample_rate, ANALYSIS_RATE, quality="HQ")
    y = y.astype(np.float32)
    if y.size < N_FFT:  # librosa warns on clips shorter than one window; zeros change no feature
        y = np.pad(y, (0, N_FFT - y.size))
    return y


def _tempo(y: np.ndarray) -> float:
    tempo = estimate_tempo(y, ANALYSIS_RATE)
    return tempo if tempo > 0 else math.nan  # librosa reports 0 when it finds no tempo


def tempo_bpm(audio: np.ndarray, sample_rate: int) -> float:
    """`audio_features`' tempo_bpm alone, for where only the tempo is wanted."""
    audio = _check_audio(audio)
    _check_rate(sample_rate)
    return _tempo(_analysis_signal(audio, sample_rate))


def audio_features(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Reference-free features of one mono float clip [samples] (full scale +/-1) at `sample_rate`.

    Returns a dict with FEATURES' keys, in its order:
    - duration_s: length of the clip as given.
    - loudness_lufs: BS.1770 integrated loudness, floored at -70 LUFS (silence, clips under 400 ms).
    - silence_share: share of 50 ms frames with RMS below -60 dBFS (full scale = 1.0).
    - clipping_share: share of samples with |x| >= 0.999.
    - harmonic_percussive_db: 10*log10(harmonic / percussive energy) after librosa's HPSS, bounded to
      +/-60 dB by a relative epsilon; 0 for silence.
    - tempo_bpm: `estimate_tempo` (librosa's beat tracker); NaN when it finds no tempo (silence).
    - tempo_stability: 1 - coefficient of variation of the tracked inter-beat intervals, clipped to
      [0, 1] (1 = perfectly steady); NaN when fewer than 3 beats are found.
    - pitch_stability: mean cosine similarity of consecutive chroma frames (46 ms apart), each frame
      mean-centred first (a Pearson correlation; anti-correlated pairs count 0), in [0, 1]; NaN with no
      two consecutive sounding frames. Centred because white noise otherwise reads as stable. Chroma,
      not f0: generated music is polyphonic, where a monophonic f0 tracker such as pyin measures
      nothing meaningful, and pyin would also cost seconds per clip.
    - spectral_contrast_db, spectral_centroid_hz, spectral_bandwidth_hz: librosa's, averaged over the
      sounding frames (so a pause does not read as a dark or flat spectrum; silence_share covers it).

    Raises ModelInputError (a ValueError) for non-1-D, empty or non-finite audio or a rate <= 0.
    """
    import librosa

    audio = _check_audio(audio)
    _check_rate(sample_rate)

    features: dict[str, float] = {
        "duration_s": audio.size / sample_rate,
        "loudness_lufs": loudness_lufs(audio, sample_rate),
        "silence_share": _silence_share(audio, sample_rate),
        "clipping_share": float(np.mean(np.abs(audio) >= CLIP_LEVEL)),
    }

    y = _analysis_signal(audio, sample_rate)
    magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)[0]
    sounding = rms >= 10.0 ** (SILENCE_DBFS / 20.0)

    # librosa's 31-frame harmonic kernel, shortened (odd) to the clip: scipy's median filter reads
    # uninitialised memory (NaN, noise) when a kernel is longer than the axis it slides along.
    frames = magnitude.shape[1]
    harmonic, percussive = librosa.decompose.hpss(magnitude, kernel_size=(min(31, frames - (frames + 1) % 2), 31))
    energy_h, energy_p = float(np.sum(harmonic**2)), float(np.sum(percussive**2))
    # An epsilon relative to the total bounds the ratio to +/-60 dB: a bare click train would otherwise
    # read -160 dB, a number set by float rounding rather than by the audio. Silence gives 0 dB.
    epsilon = 1e-6 * (energy_h + energy_p) + _EPS
    features["harmonic_percussive_db"] = 10.0 * math.log10((energy_h + epsilon) / (energy_p + epsilon))

    tempo = _tempo(y)
    features["tempo_bpm"] = tempo
    features["tempo_stability"] = _tempo_stability(y, tempo)
    features["pitch_stability"] = _pitch_stability(magnitude**2, sounding)

    spectral = {
        "spectral_contrast_db": librosa.feature.spectral_contrast(S=magnitude, sr=ANALYSIS_RATE).mean(axis=0),
        "spectral_centroid_hz": librosa.feature.spectral_centroid(S=magnitude, sr=ANALYSIS_RATE)[0],
        "spectral_bandwidth_hz": librosa.feature.spectral_bandwidth(S=magnitude, sr=ANALYSIS_RATE)[0],
    }
    for key, per_frame in spectral.items():
        features[key] = float(np.mean(per_frame[sounding])) if np.any(sounding) else math.nan
    return {key: float(features[key]) for key in FEATURES}


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio (dB) of `estimate` against `reference`, both mono at one sample rate.

    Both are trimmed to the shorter length (a codec may pad its output). The result is capped to
    +/-100 dB so identical signals (no error) give 100 rather than +inf, and a silent reference -100.
    """
    reference, estimate = _check_audio(reference, "reference"), _check_audio(estimate, "estimate")
    length = min(reference.size, estimate.size)
    reference, estimate = reference[:length], estimate[:length]
    # The two ends are decided here: torchmetrics' epsilon would turn them into about +/-150 dB, not the caps.
    if np.array_equal(reference, estimate):
        return SNR_CAP_DB
    if not np.any(reference):
        return -SNR_CAP_DB
    import torch
    from torchmetrics.functional.audio import signal_noise_ratio

    value = signal_noise_ratio(torch.from_numpy(estimate.astype(np.float64)), torch.from_numpy(reference))
    return float(np.clip(float(value), -SNR_CAP_DB, SNR_CAP_DB))
