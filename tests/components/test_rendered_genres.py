"""`data.genres`: the rendered corpus narrowed to some genres; null renders today's corpus clip for clip; an unknown
genre is named with the known ones; `render_genre`'s new data never repeats a corpus clip."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from components.corpus.genres import GENRES
from components.corpus.manifest import MANIFEST_FILE, write_manifest
from components.corpus.rendered import clip_seed, render_corpus, render_genre
from components.prepare import prepare
from settings.data_sources import CAPTIONS_FILE
from settings.params import DataParams, ParamsError

pytestmark = pytest.mark.integration

# Half-second clips at 8 kHz: the manifest is what these tests read, and 20 clips render in under a second.
MICRO = DataParams(count=20, clip_seconds=0.5, min_clip_seconds=0.5, sample_rate=8000, seed=7)
# MICRO's manifest as render_corpus wrote it before data.genres existed (ids, splits, captions and labels).
GOLDEN = Path(__file__).parent / "golden" / "rendered_manifest_seed7.jsonl"


def _manifest(params: DataParams, folder: Path) -> str:
    folder.mkdir()
    write_manifest(folder, render_corpus(params, folder))
    return (folder / MANIFEST_FILE).read_text()


def test_null_genres_renders_the_corpus_as_before(tmp_path: Path):
    assert MICRO.genres is None
    assert _manifest(MICRO, tmp_path / "null") == GOLDEN.read_text()
    # Naming every genre, in any order, is the same corpus: genres take turns in sorted order.
    every = replace(MICRO, genres=sorted(GENRES, reverse=True))
    assert _manifest(every, tmp_path / "every") == GOLDEN.read_text()


def test_a_subset_renders_only_those_genres_in_turn(tmp_path: Path):
    clips = render_corpus(replace(MICRO, count=10, genres=["rock", "jazz"]), tmp_path)
    assert [c.id for c in clips] == [f"{'jazz' if i % 2 == 0 else 'rock'}-{i:05d}" for i in range(10)]
    assert Counter(c.labels["genre"] for c in clips) == {"jazz": 5, "rock": 5}
    assert all(c.labels["genre"] in c.caption.lower() for c in clips)
    assert Counter(c.split for c in clips) == {"train": 8, "valid": 1, "test": 1}
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == sorted(f"{c.id}.flac" for c in clips)
    # Clip i keeps its seed: where the full corpus has the same genre at the same index, it is the same clip.
    full = {entry["id"]: entry["caption"] for entry in map(json.loads, GOLDEN.read_text().splitlines())}
    shared = [c for c in clips if c.id in full]
    assert [c.id for c in shared] == ["jazz-00006", "rock-00009"]
    assert all(full[c.id] == c.caption for c in shared)


def test_an_unknown_genre_is_named_with_the_known_ones_before_anything_is_written(tmp_path: Path):
    params = replace(MICRO, genres=["jazz", "polka"])
    with pytest.raises(ParamsError, match=r"unknown genre\(s\) 'polka'; known genres: ambient, blues, .*rock") as error:
        prepare(params, tmp_path / "corpus", show_progress=False)
    assert "jazz" not in str(error.value).split(";")[0]
    assert list(tmp_path.iterdir()) == []  # no corpus, no resumable staging folder
    with pytest.raises(ParamsError, match="at least one genre"):
        prepare(replace(MICRO, genres=[]), tmp_path / "corpus", show_progress=False)


def test_new_data_comes_from_its_own_seed_stream(tmp_path: Path):
    corpus = {clip_seed(0, index) for index in range(10_000)}
    assert corpus.isdisjoint(clip_seed(0, index, "new-data:jazz") for index in range(10_000))
    assert clip_seed(0, 3) == clip_seed(0, 3, None)  # the corpus's seeds are unchanged

    folder = tmp_path / "jazz"
    folder.mkdir()
    rows = render_genre("jazz", 3, MICRO, folder)
    assert [file for file, _ in rows] == ["jazz-00000.flac", "jazz-00001.flac", "jazz-00002.flac"]
    assert (folder / CAPTIONS_FILE).read_text().splitlines()[0] == "file,caption,genre,tempo,key,mood"
    assert all("jazz" in caption.lower() for _, caption in rows)
    corpus_clips = render_corpus(replace(MICRO, count=3, genres=["jazz"]), tmp_path)
    assert {c.caption for c in corpus_clips}.isdisjoint(caption for _, caption in rows)
    new_audio = {(folder / file).read_bytes() for file, _ in rows}
    assert new_audio.isdisjoint((tmp_path / c.path).read_bytes() for c in corpus_clips)
    with pytest.raises(ParamsError, match="known genres"):
        render_genre("polka", 1, MICRO, folder)
