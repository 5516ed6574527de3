"""Prompt adherence of one clip: does the audio have the tempo and key its prompt names?

The rendered corpus's captions name a tempo and a key and its labels hold them; the same estimators
that checked those labels on the real audio measure them on generated audio, so the real clips' scores
are the ceiling the estimators allow. The key comes from basic-pitch's transcribed notes
(model.transcription), which found the corpus's true key more often than the chroma estimator did
(benchmarks/key_estimators.py); the chroma estimator's score is reported beside it as `key_score_chroma`.

Continuation asks a simpler question of tempo: given the first seconds of the real clip, does the
model keep its beat? A model that does not read the prompt's tempo but does keep a beat has learned
rhythm and not the text; one that does neither has not learned rhythm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.evaluation.music_models import TOP_K
from model import audio_quality, transcription
from model.music_features import estimate_key, key_name, key_score, tempo_matches

# What the adherence numbers are measured with: evaluations with another version are not compared.
ESTIMATORS = "key from basic-pitch notes; tags from MSD_musicnn"

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
    """Tempo and key adherence for a clip whose labels name them, and its note density.

    `tempo_bpm` is the clip's estimated tempo (audio_features already tracked its beats)."""
    notes = transcription.transcribe(audio, sample_rate)
    row = _tempo_row(tempo_bpm, labels, "")
    row["note_density"] = transcription.note_density(notes, len(audio) / sample_rate)
    if "root" in labels and "mode" in labels:
        truth = (int(labels["root"]), str(labels["mode"]))
        estimated = transcription.key_from_notes(notes)  # None: nothing pitched was heard, so no key is followed
        row["key_estimated"] = key_name(*estimated) if estimated else "none"
        row["key_score"] = key_score(estimated, truth) if estimated else 0.0
        row["key_exact"] = float(row["key_score"] == 1.0)
        row["key_score_chroma"] = key_score(estimate_key(audio, sample_rate), truth)
    return row


def continuation_adherence(continued: np.ndarray, sample_rate: int, labels: dict[str, Any]) -> dict[str, Any]:
    """Tempo adherence of what followed the real clip's opening (only the continued part, not the opening)."""
    return _tempo_row(audio_quality.tempo_bpm(continued, sample_rate), labels, "continued_")


ADHERENCE = {
    "tempo_match": ("tempo followed (share within 4%, any metrical level)", "higher"),
    "tempo_error": ("tempo error (relative, nearest metrical level)", "lower"),
    "key_score": ("key score (MIREX weighted; key from basic-pitch's notes)", "higher"),
    "key_exact": ("key exact (share)", "higher"),
    "key_score_chroma": ("key score, key from chroma", "higher"),
    "tag_kl": ("musicnn tag KL(real || generated), nats", "lower"),
    "tag_genre": (f"genre among musicnn's top {TOP_K} tags (share; genres it has a tag for)", "higher"),
    "label_accuracy": ("in-domain label classifier accuracy", "higher"),
    "label_kl": ("in-domain label KL(real || generated), nats", "lower"),
    "continued_tempo_match": ("tempo kept continuing the real clip (share within 4%)", "higher"),
    "continued_tempo_error": ("tempo error continuing the real clip", "lower"),
}
