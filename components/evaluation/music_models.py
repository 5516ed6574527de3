"""Prompt adherence judged by pretrained music models rather than by models trained on this corpus.

- musicnn's tags (MSD_musicnn, model/music_tagger.py: 50 Million Song Dataset tags of genre, mood, era and
  instrument). `tag_kl` is KL(real clip's tags || generated clip's tags), each clip's mean tag probabilities
  normalised to sum 1: MusicGen's KL, which compares PaSST's AudioSet labels the same way, with a music tagger
  whose weights ship in a wheel. `tag_genre` is whether the prompt's genre is among the clip's TOP_K tags, for
  the genres the tagger has a tag for (MSD_musicnn has none for classical or reggae: no value there).
- basic-pitch's notes give the key (adherence.py) and `note_density`, notes a second.

The label classifier (classifier.py) stays beside them: it is trained on this corpus's clips, so it knows this
corpus's genres (all of them) but only as well as a few dozen clips teach it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from components.evaluation.classifier import kl_divergence

TOP_K = 5  # musicnn's own `top_tags` default


def tagger_for(embedders: dict[str, Any], seconds: float) -> tuple[Any, str]:
    """The musicnn tagger (the "musicnn" FAD embedder's, so each clip goes through the network once), or None
    for clips shorter than its 3 s patch; with a line for metrics.json saying which."""
    from model.music_tagger import MusicnnTagger
    from model.musicnn import MIN_SAMPLES, SAMPLE_RATE

    if seconds < MIN_SAMPLES / SAMPLE_RATE:
        return None, f"not measured: {seconds:g} s clips are shorter than musicnn's {MIN_SAMPLES / SAMPLE_RATE} s patch"
    tagger = embedders["musicnn"].tagger if "musicnn" in embedders else MusicnnTagger()
    return tagger, f"{tagger.model} (musicnn 0.1.0's weights): tag KL against the real clip, genre in its top {TOP_K}"


def clip_tags(tagger: Any, audio: dict[str, list[np.ndarray]], rate: int, systems) -> dict[str, list[np.ndarray]]:
    """Each system's clips' mean tag probabilities (real included: the KL's reference)."""
    return {system: [tagger.tags(clip, rate) for clip in audio[system]] for system in {*systems, "real"}}


def tag_adherence(
    tagger: Any, tags: np.ndarray, real_tags: np.ndarray, labels: dict[str, Any], is_real: bool = False
) -> dict[str, Any]:
    """One clip's tag KL against the real clip of its prompt (NaN for the real clip itself), its top tags, and
    whether its genre is among them."""
    kl = math.nan if is_real else float(kl_divergence(real_tags, tags))
    row: dict[str, Any] = {"tag_kl": kl, "tags_top": " ".join(tagger.top_tags(tags, TOP_K))}
    genre = labels.get("genre")
    if genre is not None and tagger.has_tag_for(str(genre)):
        row["tag_genre"] = float(tagger.genre_in_top(tags, str(genre), TOP_K))
    return row
