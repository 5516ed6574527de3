"""Captions written from labels: several templates and paraphrases, so the model learns the facts
(genre, key, tempo, instruments, mood), not one sentence shape.

`write_caption` only says what the labels say: augmentation rewrites labels first (a pitch shift
changes the key) and then the caption from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_PIECE = ("tune", "track", "piece", "song")
_TEMPO_WORDS = ((75, "slow"), (100, "mid-tempo"), (130, "upbeat"), (999, "fast"))

_TEMPLATES = (
    "{A_mood} {genre} {piece} in {key} at {tempo} BPM with {instruments}.",
    "{Mood} {genre} {piece} featuring {instruments}, {key}, {tempo} BPM.",
    "{Pace} {genre} with {instruments}; {mood} feel, {tempo} bpm in {key}.",
    "{Genre} {piece}, {tempo} BPM, key of {key}: {instruments}. The mood is {mood}.",
    "An instrumental {genre} {piece} with {instruments}, played at {tempo} BPM in {key}, {mood} and {pace}.",
    "{Instruments} in {a_mood} {genre} {piece} ({key}, {tempo} BPM).",
)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _pace(tempo: float) -> str:
    return next(word for limit, word in _TEMPO_WORDS if tempo < limit)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def write_caption(labels: dict[str, Any], rng: np.random.Generator) -> str:
    """A natural-language caption of a rendered clip's labels (genre, key, tempo, mood, instruments)."""
    instruments = list(labels["instruments"])
    if labels.get("drums"):
        instruments.append(labels["drums"])
    tempo = round(float(labels["tempo"]))
    fields = {
        "genre": labels["genre"],
        "mood": labels["mood"],
        "key": labels["key"],
        "tempo": tempo,
        "pace": _pace(tempo),
        "piece": _PIECE[rng.integers(len(_PIECE))],
        "instruments": _join(instruments),
        "a_mood": _article(labels["mood"]),
    }
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    capitalized = {k[0].upper() + k[1:]: str(v)[0].upper() + str(v)[1:] for k, v in fields.items()}
    return template.format(**fields, **capitalized)


def merge_captions(first: str, second: str) -> str:
    """The caption of two clips mixed together (polymix)."""
    return f"{first.rstrip('.')}, layered with {second[0].lower()}{second[1:]}"
