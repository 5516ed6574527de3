"""The embedded default corpus: procedurally composed pieces, rendered offline, captioned from labels.

Genres take turns so every genre is equally represented, and splits are stratified by genre, so
the held-out test prompts cover every genre. Clip i's piece and caption are fixed by
(seed, i): the same parameters give the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components.corpus.captions import write_caption
from components.corpus.compose import compose
from components.corpus.genres import GENRES
from components.corpus.manifest import SPLITS, Clip, split_counts
from components.corpus.render import render
from model.audio import write_audio
from settings.params import DataParams


def clip_seed(seed: int, index: int) -> int:
    """A stable 63-bit seed for clip `index` (Python's hash() changes between processes)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def assign_splits(genres: list[str], shares: dict[str, float], seed: int) -> list[str]:
    """A split per clip: counts from `split_counts`, dealt round-robin over genres (each shuffled)."""
    rng = np.random.default_rng(seed)
    by_genre: dict[str, list[int]] = {}
    for index, genre in enumerate(genres):
        by_genre.setdefault(genre, []).append(index)
    queues = [list(rng.permutation(indices)) for _, indices in sorted(by_genre.items())]
    order = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(int(queue.pop()))
    counts = split_counts(len(genres), shares)
    labels = ["test"] * counts["test"] + ["valid"] * counts["valid"] + ["train"] * counts["train"]
    splits = [""] * len(genres)
    for index, split in zip(order, labels, strict=True):
        splits[index] = split
    assert set(splits) <= set(SPLITS)
    return splits


def render_corpus(params: DataParams, folder: Path, progress: Callable[[int], None] | None = None) -> list[Clip]:
    """Render `params.count` clips into `folder`/audio and `folder`/midi; an existing audio file is kept
    (it holds the same bytes: this is how a killed run resumes)."""
    names = sorted(GENRES)
    genres = [names[i % len(names)] for i in range(params.count)]
    splits = assign_splits(genres, params.splits, params.seed)
    (folder / "audio").mkdir(exist_ok=True)
    (folder / "midi").mkdir(exist_ok=True)
    clips = []
    for index, (genre, split) in enumerate(zip(genres, splits, strict=True)):
        clip_id = f"{genre.replace(' ', '-')}-{index:05d}"
        seed = clip_seed(params.seed, index)
        piece = compose(genre, seed, params.clip_seconds)
        caption = write_caption(piece.labels, np.random.default_rng(seed))
        path = Path("audio") / f"{clip_id}.{params.audio_format}"
        if not (folder / path).exists():
            piece.midi.write(str(folder / "midi" / f"{clip_id}.mid"))
            write_audio(folder / path, render(piece.midi, params.sample_rate, params.clip_seconds), params.sample_rate)
        clips.append(
            Clip(
                id=clip_id,
                path=str(path),
                duration=params.clip_seconds,
                sample_rate=params.sample_rate,
                caption=caption,
                split=split,
                source=clip_id,
                labels=piece.labels,
            )
        )
        if progress:
            progress(1)
    return clips
