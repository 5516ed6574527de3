"""Musical facts about audio: key names, and tempo and key estimated from the signal.

Used to check that rendered labels are true, and by evaluation to measure prompt adherence.
Tempo comes from librosa's beat tracker; key from the Krumhansl-Schmuckler method: the mean
chroma (librosa's CENS chroma) correlated with each rotation of a major and a minor key profile.
The profiles are Albrecht & Shanahan's (2013, from a corpus of common-practice music): on the
rendered corpus they found the exact key of 90% of 40 clips vs 70% for Krumhansl & Kessler's.
`match_key_profile` is the matcher alone, for any 12-bin pitch-class weighting (model/transcription.py
feeds it transcribed notes). Key estimates are scored with mir_eval's MIREX weighted score.
"""

from __future__ import annotations

import warnings

import numpy as np

PITCH_CLASSES = ("C", "D-flat", "D", "E-flat", "E", "F", "F-sharp", "G", "A-flat", "A", "B-flat", "B")
MINOR_PITCH_CLASSES = ("C", "C-sharp", "D", "E-flat", "E", "F", "F-sharp", "G", "G-sharp", "A", "B-flat", "B")
MODES = ("major", "minor")

# Albrecht & Shanahan (2013) key profiles, tonic first.
_MAJOR_PROFILE = np.array([0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081])
_MINOR_PROFILE = np.array([0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052])
ALBRECHT_SHANAHAN = (_MAJOR_PROFILE, _MINOR_PROFILE)
# Krumhansl & Kessler's (1982) probe-tone ratings, tonic first: the better fit for transcribed notes
# (model/transcription.py), where Albrecht & Shanahan's often name the key a fourth above.
KRUMHANSL_KESSLER = (
    np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
)


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

    with warnings.catch_warnings():
        # Near-silent audio (an untrained model's, say) has no peaks to estimate tuning from: librosa then
        # assumes none, which is the right answer, but warns.
        warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty frequency set")
        chroma = librosa.feature.chroma_cens(y=audio.astype(np.float32), sr=sample_rate).mean(axis=1)
    return match_key_profile(chroma)


def match_key_profile(
    pitch_classes: np.ndarray, profiles: tuple[np.ndarray, np.ndarray] = ALBRECHT_SHANAHAN
) -> tuple[int, str]:
    """(root, mode) whose rotated key profile (major, minor) correlates best with a 12-bin pitch-class weighting
    (C first). A flat (or all-zero) weighting correlates with nothing: it gets C major, the first candidate."""
    best, best_score = (0, "major"), -np.inf
    for mode, profile in zip(MODES, profiles, strict=True):
        for root in range(12):
            score = np.corrcoef(pitch_classes, np.roll(profile, root))[0, 1]
            if score > best_score:
                best, best_score = (root, mode), score
    return best


def tempo_matches(estimated: float, true: float, tolerance: float = 0.04) -> bool:
    """Within `tolerance` (relative) of the true tempo, or of its double or half (beat trackers often
    lock onto another metrical level; the octave is reported separately where it matters)."""
    return any(abs(estimated - true * factor) <= tolerance * true * factor for factor in (1.0, 2.0, 0.5))


def mirex_key_name(root: int, mode: str) -> str:
    """The key as mir_eval spells it ('Bb major', 'C# minor'): key_name's spelling with b and # for -flat and
    -sharp, so a key keeps its name's enharmonic choice."""
    return key_name(root, mode).replace("-flat", "b").replace("-sharp", "#")


def key_score(estimated: tuple[int, str], true: tuple[int, str]) -> float:
    """MIREX's weighted key score (mir_eval.key.weighted_score): 1 same key, 0.5 the estimate a fifth above the
    true key in its mode, 0.3 its relative key, 0.2 its parallel key, else 0 (a fourth above scores 0)."""
    import mir_eval.key  # imports scipy.stats (a second): only where keys are scored

    return float(mir_eval.key.weighted_score(mirex_key_name(*true), mirex_key_name(*estimated)))
