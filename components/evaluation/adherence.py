"""Prompt adherence of one clip: does the audio have the tempo and key its prompt names?

The rendered corpus's captions name a tempo and a key and its labels hold them; the same estimators
that checked those labels on the real audio (model.music_features) measure them on generated audio,
so the real clips' scores are the ceiling the estimators allow.

Continuation asks a simpler question of tempo: given the first seconds of the real clip, does the
model keep its beat? A model that does not read the prompt's tempo but does keep a beat has learned
rhythm and not the text; one that does neither has not learned rhythm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model import audio_quality
from model.music_features import estimate_key, key_name, key_score, tempo_matches

# Metrical levels a beat tracker may lock onto: the tempo, its double and its half.
_LEVELS = (1.0, 2.0, 0.5)


def tempo_error(estimated: float, true: float) -> float:
    """Relative error (0.05 = 5%) against the nearest metrical level of the true tempo."""
    return min(abs(estimated - true * level) / (true * level) for level in _LEVELS)


def _tempo_row(estimated: float, labels: dict[str, Any], prefix: str) -> dict[str, Any]:
    if not labels.get("tempo"):
        return {}
    true = float(labels["tempo"])
    return {
        f"{prefix}tempo_error": tempo_error(estimated, true),
        f"{prefix}tempo_match": float(tempo_matches(estimated, true)),
    }


def adherence(audio: np.ndarray, sample_rate: int, labels: dict[str, Any], tempo_bpm: float) -> dict[str, Any]:
    """Tempo and key adherence for a clip whose labels name them (empty for a clip without those labels).

    `tempo_bpm` is the clip's estimated tempo (audio_features already tracked its beats)."""
    row = _tempo_row(tempo_bpm, labels, "")
    if "root" in labels and "mode" in labels:
        estimated = estimate_key(audio, sample_rate)
        row["key_estimated"] = key_name(*estimated)
        row["key_score"] = key_score(estimated, (int(labels["root"]), str(labels["mode"])))
        row["key_exact"] = float(row["key_score"] == 1.0)
    return row


def continuation_adherence(continued: np.ndarray, sample_rate: int, labels: dict[str, Any]) -> dict[str, Any]:
    """Tempo adherence of what followed the real clip's opening (only the continued part, not the opening)."""
    return _tempo_row(audio_quality.tempo_bpm(continued, sample_rate), labels, "continued_")


ADHERENCE = {
    "tempo_match": ("tempo followed (share within 4%, any metrical level)", "higher"),
    "tempo_error": ("tempo error (relative, nearest metrical level)", "lower"),
    "key_score": ("key score (MIREX weighted)", "higher"),
    "key_exact": ("key exact (share)", "higher"),
    "label_accuracy": ("label classifier accuracy", "higher"),
    "label_kl": ("label KL(real || generated), nats", "lower"),
    "continued_tempo_match": ("tempo kept continuing the real clip (share within 4%)", "higher"),
    "continued_tempo_error": ("tempo error continuing the real clip", "lower"),
}
