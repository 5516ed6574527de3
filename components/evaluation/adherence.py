"""Prompt adherence of one clip: does the audio have the tempo and key its prompt names?

The rendered corpus's captions name a tempo and a key and its labels hold them; the same estimators
that checked those labels on the real audio (model.music_features) measure them on generated audio,
so the real clips' scores are the ceiling the estimators allow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.music_features import estimate_key, key_name, key_score, tempo_matches

# Metrical levels a beat tracker may lock onto: the tempo, its double and its half.
_LEVELS = (1.0, 2.0, 0.5)


def tempo_error(estimated: float, true: float) -> float:
    """Relative error (0.05 = 5%) against the nearest metrical level of the true tempo."""
    return min(abs(estimated - true * level) / (true * level) for level in _LEVELS)


def adherence(audio: np.ndarray, sample_rate: int, labels: dict[str, Any], tempo_bpm: float) -> dict[str, Any]:
    """Tempo and key adherence for a clip whose labels name them (empty for a clip without those labels).

    `tempo_bpm` is the clip's estimated tempo (audio_features already tracked its beats)."""
    row: dict[str, Any] = {}
    if labels.get("tempo"):
        row["tempo_error"] = tempo_error(tempo_bpm, float(labels["tempo"]))
        row["tempo_match"] = float(tempo_matches(tempo_bpm, float(labels["tempo"])))
    if "root" in labels and "mode" in labels:
        estimated = estimate_key(audio, sample_rate)
        row["key_estimated"] = key_name(*estimated)
        row["key_score"] = key_score(estimated, (int(labels["root"]), str(labels["mode"])))
        row["key_exact"] = float(row["key_score"] == 1.0)
    return row


ADHERENCE = {
    "tempo_match": ("tempo followed (share within 4%, any metrical level)", "higher"),
    "tempo_error": ("tempo error (relative, nearest metrical level)", "lower"),
    "key_score": ("key score (MIREX weighted)", "higher"),
    "key_exact": ("key exact (share)", "higher"),
    "label_accuracy": ("label classifier accuracy", "higher"),
    "label_kl": ("label KL(real || generated), nats", "lower"),
}
