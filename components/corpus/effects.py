"""Audio effects for augmentation: parameters drawn from a numpy Generator and scaled by a strength in
[0, 1], then applied exactly as drawn, so an augmented copy is fixed by its seed and its record says
what was done to it.

The DSP is maintained libraries': Rubber Band (through pedalboard) for time stretch and pitch shift,
pedalboard's JUCE plugins for reverb, distortion, chorus and compression, and audiomentations for the
time mask, frequency mask and coloured noise. audiomentations draws from the global `random` and numpy
generators even when a range is pinned to one value, so its calls run under `seeded_globals`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pedalboard
from audiomentations import AddColorNoise, BandStopFilter, TimeMask

Params = dict[str, Any]

NOISE_DECAY_DB = {"white": 0.0, "pink": -3.01, "brown": -6.02}  # spectral slope per octave


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed Python's and numpy's global generators for the block, then put back what was there."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _scaled(rng: np.random.Generator, strength: float, low: float, high: float) -> float:
    # Strength sets the ceiling and half of it the floor, so a strong copy is reliably strong.
    return round(low + (high - low) * strength * float(rng.uniform(0.5, 1.0)), 3)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(rng.uniform(low, high)), 3)


def draw_semitones(rng: np.random.Generator, strength: float) -> int:
    """A non-zero shift of up to ±round(4 × strength) semitones (at least ±1)."""
    reach = max(1, round(4 * strength))
    return int(rng.integers(1, reach + 1)) * int(rng.choice((-1, 1)))


def draw_stretch(rng: np.random.Generator, strength: float) -> float:
    """A speed factor within ±20 % × strength of 1 (above 1 is faster and shorter)."""
    return 1.0 + _scaled(rng, strength, 0.0, 0.2) * int(rng.choice((-1, 1)))


def stretch_and_shift(audio: np.ndarray, sample_rate: int, factor: float, semitones: int) -> np.ndarray:
    """Play `factor` times as fast and `semitones` higher, in one Rubber Band pass."""
    out = pedalboard.time_stretch(
        audio[np.newaxis], sample_rate, stretch_factor=factor, pitch_shift_in_semitones=float(semitones)
    )
    return out[0]


def _run(transform: Any, audio: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
    with seeded_globals(seed):
        return transform(audio, sample_rate)


def _draw_distortion(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    return {"drive_db": _scaled(rng, strength, 2.0, 24.0)}


def _distortion(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    return pedalboard.Distortion(drive_db=p["drive_db"])(audio, sample_rate)


def _draw_chorus(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    return {
        "rate_hz": _uniform(rng, 0.3, 2.0),
        "depth": _scaled(rng, strength, 0.05, 0.6),
        "mix": _scaled(rng, strength, 0.15, 0.6),
    }


def _chorus(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    return pedalboard.Chorus(rate_hz=p["rate_hz"], depth=p["depth"], mix=p["mix"])(audio, sample_rate)


def _draw_compression(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    return {
        "threshold_db": -_scaled(rng, strength, 6.0, 30.0),
        "ratio": _scaled(rng, strength, 1.5, 8.0),
        "attack_ms": _uniform(rng, 2.0, 30.0),
        "release_ms": _uniform(rng, 60.0, 300.0),
    }


def _compression(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    compressor = pedalboard.Compressor(
        threshold_db=p["threshold_db"], ratio=p["ratio"], attack_ms=p["attack_ms"], release_ms=p["release_ms"]
    )
    return compressor(audio, sample_rate)


def _draw_reverb(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    wet = _scaled(rng, strength, 0.05, 0.5)
    return {
        "room_size": _scaled(rng, strength, 0.1, 0.9),
        "damping": _uniform(rng, 0.2, 0.8),
        "wet_level": wet,
        "dry_level": round(1.0 - wet / 2, 3),
    }


def _reverb(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    return pedalboard.Reverb(**p)(audio, sample_rate)


def _draw_frequency_mask(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    bandwidth = _scaled(rng, strength, 0.1, 1.5)  # as a fraction of the centre frequency
    # Keep the whole stop band below Nyquist at any sample rate.
    top = min(6000.0, 0.45 * sample_rate / (1 + bandwidth / 2))
    centre = math.exp(rng.uniform(math.log(150.0), math.log(top)))
    return {"centre_hz": round(centre, 1), "bandwidth": bandwidth, "rolloff_db": 12 if strength < 0.5 else 24}


def _frequency_mask(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    band_stop = BandStopFilter(
        min_center_freq=p["centre_hz"],
        max_center_freq=p["centre_hz"],
        min_bandwidth_fraction=p["bandwidth"],
        max_bandwidth_fraction=p["bandwidth"],
        min_rolloff=p["rolloff_db"],
        max_rolloff=p["rolloff_db"],
        p=1.0,
    )
    return _run(band_stop, audio, sample_rate)


def _draw_noise(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    return {
        "snr_db": round(40.0 - _scaled(rng, strength, 0.0, 30.0), 3),
        "colour": str(rng.choice(list(NOISE_DECAY_DB))),
        "seed": int(rng.integers(2**32)),
    }


def _noise(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    decay = NOISE_DECAY_DB[p["colour"]]
    noise = AddColorNoise(min_snr_db=p["snr_db"], max_snr_db=p["snr_db"], min_f_decay=decay, max_f_decay=decay, p=1.0)
    return _run(noise, audio, sample_rate, seed=p["seed"])


def _draw_time_mask(rng: np.random.Generator, strength: float, sample_rate: int) -> Params:
    # Fractions of the clip: the mask's width, and where it starts within the room left for it.
    return {"width": _scaled(rng, strength, 0.01, 0.2), "start": _uniform(rng, 0.0, 1.0)}


def _time_mask(audio: np.ndarray, sample_rate: int, p: Params) -> np.ndarray:
    width = int(p["width"] * len(audio))
    if width == 0:
        return audio
    start = int(p["start"] * (len(audio) - width))
    tail = audio[start:]
    # TimeMask places its mask at random unless told "start": mask the start of the tail instead.
    share = width / len(tail)
    mask = TimeMask(min_band_part=share, max_band_part=share, mask_location="start", p=1.0)
    return np.concatenate([audio[:start], _run(mask, tail, sample_rate)])


@dataclass(frozen=True)
class Effect:
    draw: Callable[[np.random.Generator, float, int], Params]  # (rng, strength, sample rate) -> parameters
    apply: Callable[[np.ndarray, int, Params], np.ndarray]  # (audio, sample rate, parameters) -> audio


# Effects that leave tempo and key alone, in the order they are applied: the instrument's own sound
# first, then the room, then the recording chain; the time mask last so it is true silence.
EFFECTS: dict[str, Effect] = {
    "distortion": Effect(_draw_distortion, _distortion),
    "chorus": Effect(_draw_chorus, _chorus),
    "compression": Effect(_draw_compression, _compression),
    "reverb": Effect(_draw_reverb, _reverb),
    "frequency_mask": Effect(_draw_frequency_mask, _frequency_mask),
    "noise": Effect(_draw_noise, _noise),
    "time_mask": Effect(_draw_time_mask, _time_mask),
}
