"""The embedded default corpus: procedurally composed pieces, rendered offline, captioned from labels.

Genres take turns so every genre is equally represented, and splits are stratified by genre, so
the held-out test prompts cover every genre. Clip i's piece and caption are fixed by
(seed, i): the same parameters give the same bytes.

`data.genres` narrows the turns to some genres (a base model that never heard the others), and
`render_genre` renders one genre as a folder of new data, from a seed stream of its own.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.corpus.captions import write_caption
from components.corpus.compose import compose
from components.corpus.genres import GENRES
from components.corpus.ingest import LABEL_COLUMNS
from components.corpus.manifest import SPLITS, Clip, split_counts
from components.corpus.render import render
from model.audio import write_audio
from settings.data_sources import CAPTIONS_FILE
from settings.params import DataParams, ParamsError


def clip_seed(seed: int, index: int, stream: str | None = None) -> int:
    """A stable 63-bit seed for clip `index` (Python's hash() changes between processes).

    The corpus's clips hash "seed:index"; another `stream` hashes "seed:stream:index", which never equals
    such a string, so its clips are not the corpus's (short of a sha256 collision) whatever the counts."""
    key = f"{seed}:{index}" if stream is None else f"{seed}:{stream}:{index}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_genres(names: list[str]) -> None:
    """ParamsError naming every genre of `names` that the rendered corpus does not know, with the known ones."""
    unknown = [name for name in names if name not in GENRES]
    if unknown:
        raise ParamsError(
            f"unknown genre(s) {', '.join(map(repr, unknown))}; known genres: {', '.join(sorted(GENRES))}"
        )


def corpus_genres(params: DataParams) -> list[str]:
    """The genres the corpus renders, in the order they take turns: data.genres, or every genre when it is null."""
    if params.genres is None:
        return sorted(GENRES)
    check_genres(params.genres)
    return sorted(set(params.genres))  # sorted, as for every genre: the listed order changes no clip


def clip_id(genre: str, index: int) -> str:
    return f"{genre.replace(' ', '-')}-{index:05d}"


def render_clip(
    genre: str, seed: int, params: DataParams, audio: Path, midi: Path | None = None
) -> tuple[str, dict[str, Any]]:
    """Compose the piece `seed` fixes in `genre`, write its audio to `audio` (and its MIDI to `midi`) at the
    params' sample rate, length and format, and return its caption and labels. An existing audio file is kept:
    it holds the same bytes, and this is how a killed run resumes."""
    piece = compose(genre, seed, params.clip_seconds)
    caption = write_caption(piece.labels, np.random.default_rng(seed))
    if not audio.exists():
        if midi is not None:
            piece.midi.write(str(midi))
        write_audio(audio, render(piece.midi, params.sample_rate, params.clip_seconds), params.sample_rate)
    return caption, piece.labels


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
    """Render `params.count` clips of `corpus_genres(params)` into `folder`/audio and `folder`/midi; existing
    audio files are kept (`render_clip`)."""
    names = corpus_genres(params)
    genres = [names[i % len(names)] for i in range(params.count)]
    splits = assign_splits(genres, params.splits, params.seed)
    (folder / "audio").mkdir(exist_ok=True)
    (folder / "midi").mkdir(exist_ok=True)
    clips = []
    for index, (genre, split) in enumerate(zip(genres, splits, strict=True)):
        name = clip_id(genre, index)
        path = Path("audio") / f"{name}.{params.audio_format}"
        seed = clip_seed(params.seed, index)
        caption, labels = render_clip(genre, seed, params, folder / path, folder / "midi" / f"{name}.mid")
        clips.append(
            Clip(
                id=name,
                path=str(path),
                duration=params.clip_seconds,
                sample_rate=params.sample_rate,
                caption=caption,
                split=split,
                source=name,
                labels=labels,
            )
        )
        if progress:
            progress(1)
    return clips


# The seed stream of `render_genre`: clips of the corpus's own seed and genre, yet never the corpus's clips
# (`clip_seed`), so new data fine-tuned on is not a copy of what the base model trained on.
NEW_DATA_STREAM = "new-data"


def render_genre(
    genre: str, count: int, params: DataParams, folder: Path, progress: Callable[[int], None] | None = None
) -> list[tuple[str, str]]:
    """Render `count` clips of `genre` into `folder` as audio files and a `captions.csv` (file, caption and each
    clip's labels in `LABEL_COLUMNS`): the layout of a data source, which `musicops data add` takes, with the labels
    evaluation measures adherence against. Clip i's seed is clip_seed(params.seed, i, stream) with a stream of this
    genre's own. Returns the (file, caption) rows."""
    check_genres([genre])
    rows = []
    table = []
    for index in range(count):
        file = f"{clip_id(genre, index)}.{params.audio_format}"
        seed = clip_seed(params.seed, index, f"{NEW_DATA_STREAM}:{genre}")
        caption, labels = render_clip(genre, seed, params, folder / file)
        rows.append((file, caption))
        table.append([file, caption, *(labels[name] for name in LABEL_COLUMNS)])
        if progress:
            progress(1)
    with open(folder / CAPTIONS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption", *LABEL_COLUMNS])
        writer.writerows(table)
    return rows
