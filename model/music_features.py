"""Musical facts about audio: key names, and tempo and key estimated from the signal.

Used to check that rendered labels are true, and by evaluation to measure prompt adherence.
Tempo comes from librosa's beat tracker; key from the Krumhansl-Schmuckler method (correlating
the mean chroma with rotated major and minor key profiles).
"""

from __future__ import annotations

import numpy as np

PITCH_CLASSES = ("C", "D-flat", "D", "E-flat", "E", "F", "F-sharp", "G", "A-flat", "A", "B-flat", "B")
MINOR_PITCH_CLASSES = ("C", "C-sharp", "D", "E-flat", "E", "F", "F-sharp", "G", "G-sharp", "A", "B-flat", "B")
MODES = ("major", "minor")

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_name(root: int, mode: str) -> str:
    """'B-flat major', 'C-sharp minor': the spelling musicians use for that key."""
    names = PITCH_CLASSES if mode == "major" else MINOR_PITCH_CLASSES
    return f"{names[root % 12]} {mode}"


def parse_key(name: str) -> tuple[int, str]:
    """The inverse of key_name: 'B-flat major' -> (10, 'major')."""
    tonic, _, mode = name.rpartition(" ")
    names = PITCH_CLASSES if mode == "major" else MINOR_PITCH_CLASSES
    if mode not in MODES or tonic not in names:
        raise ValueError(f"not a key name: {name!r}")
    return names.index(tonic), mode


def estimate_tempo(audio: np.ndarray, sample_rate: int) -> float:
    """Beats per minute of mono audio, from librosa's onset-envelope beat tracker."""
    import librosa

    tempo, _ = librosa.beat.beat_track(y=audio.astype(np.float32), sr=sample_rate)
    return float(np.atleast_1d(tempo)[0])


def estimate_key(audio: np.ndarray, sample_rate: int) -> tuple[int, str]:
    """(root pitch class, mode) of mono audio by the Krumhansl-Schmuckler key profile."""
    import librosa

    chroma = librosa.feature.chroma_cqt(y=audio.astype(np.float32), sr=sample_rate).mean(axis=1)
    best, best_score = (0, "major"), -np.inf
    for mode, profile in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for root in range(12):
            score = np.corrcoef(chroma, np.roll(profile, root))[0, 1]
            if score > best_score:
                best, best_score = (root, mode), score
    return best


def tempo_matches(estimated: float, true: float, tolerance: float = 0.04) -> bool:
    """Within `tolerance` (relative) of the true tempo, or of its double or half (beat trackers often
    lock onto another metrical level; the octave is reported separately where it matters)."""
    return any(abs(estimated - true * factor) <= tolerance * true * factor for factor in (1.0, 2.0, 0.5))
