"""The musicnn port against musicnn's own TensorFlow outputs, its tagger API and the "musicnn" FAD embedder.

tests/fixtures/musicnn_tf_reference.npz holds what musicnn 0.1.0's extractor (TensorFlow 2.21) returned for the
clips tests/support/musicnn_reference.py defines; the clips are rendered again here, not stored. Measured on
the 2-core development machine: taggram within 1.2e-6 and penultimate features within 1.2e-5 of TensorFlow's;
the tolerances leave room for other BLAS builds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from components.corpus.genres import GENRES
from model.embedders import EMBEDDERS, Embedder, make_embedder
from model.errors import ModelInputError
from model.music_tagger import GENRE_TAGS, MusicnnTagger
from model.musicnn import EMBEDDING_DIM, MODELS, tag_names
from tests.support.musicnn_reference import CLIPS, FIXTURE, LOUD_CLIP, SAMPLE_RATE, render_clip

pytestmark = pytest.mark.integration

TAGGRAM_TOLERANCE = 1e-5
PENULTIMATE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference() -> Iterator[dict[str, np.ndarray]]:
    with np.load(FIXTURE) as stored:
        yield {key: stored[key] for key in stored.files}


@pytest.fixture(scope="module")
def tagger() -> MusicnnTagger:
    return MusicnnTagger()  # its weights cached in the session's folder (tests/conftest.py)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [render_clip(*clip) for clip in (*CLIPS, LOUD_CLIP)]


def test_reference_clips_render_as_recorded(reference: dict[str, np.ndarray], clips: list[np.ndarray]) -> None:
    # A renderer change would otherwise show up as a parity failure.
    assert [tuple(c) for c in json.loads(str(reference["clips"]))] == [*CLIPS, LOUD_CLIP]
    rms = [np.sqrt(np.mean(np.square(audio, dtype=np.float64))) for audio in clips]
    np.testing.assert_allclose(rms, reference["rms"], rtol=1e-6)


@pytest.mark.parametrize("index", range(len(CLIPS)))
def test_port_equals_tensorflow(
    tagger: MusicnnTagger, reference: dict[str, np.ndarray], clips: list[np.ndarray], index: int
) -> None:
    taggram = tagger.taggram(clips[index], SAMPLE_RATE)
    features = tagger.embeddings(clips[index], SAMPLE_RATE)
    assert taggram.shape == reference[f"taggram_{index}"].shape == (2, 50)
    assert features.shape == reference[f"penultimate_{index}"].shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(taggram, reference[f"taggram_{index}"], rtol=0, atol=TAGGRAM_TOLERANCE)
    np.testing.assert_allclose(features, reference[f"penultimate_{index}"], rtol=0, atol=PENULTIMATE_TOLERANCE)


def test_loud_audio_gets_tags_where_the_extractor_gives_nan(
    tagger: MusicnnTagger, reference: dict[str, np.ndarray], clips: list[np.ndarray]
) -> None:
    # musicnn's float16 log compression overflows on this peak-normalised clip: TensorFlow's outputs are NaN.
    assert np.isnan(reference[f"taggram_{len(CLIPS)}"]).all()
    taggram = tagger.taggram(clips[-1], SAMPLE_RATE)
    assert np.isfinite(taggram).all() and np.isfinite(tagger.embeddings(clips[-1], SAMPLE_RATE)).all()


def test_tags_are_the_mean_of_the_taggram(tagger: MusicnnTagger, clips: list[np.ndarray]) -> None:
    tags = tagger.tags(clips[0], SAMPLE_RATE)
    assert tags.shape == (50,) and tags.dtype == np.float32
    np.testing.assert_allclose(tags, tagger.taggram(clips[0], SAMPLE_RATE).mean(axis=0))
    assert ((tags > 0) & (tags < 1)).all()
    # The same audio at another rate is resampled to 16 kHz. The round trip through 32 kHz loses the top mel
    # bands (soxr's passband ends near 7.3 kHz), which moves the tags a little (correlation 0.97), not the top.
    import soxr

    at_32k = soxr.resample(clips[0], SAMPLE_RATE, 32_000, quality="HQ").astype(np.float32)
    resampled = tagger.tags(at_32k, 32_000)
    assert tagger.top_tags(resampled, 3) == tagger.top_tags(tags, 3)
    assert np.corrcoef(resampled, tags)[0, 1] > 0.95


def test_genre_in_top_tags(tagger: MusicnnTagger, reference: dict[str, np.ndarray]) -> None:
    rock = reference["taggram_0"].mean(axis=0)  # the rock clip, as TensorFlow tagged it
    assert "rock" in tagger.top_tags(rock, 5)
    assert tagger.genre_in_top(rock, "rock", k=5) is True
    assert tagger.genre_in_top(rock, "blues", k=1) is False
    assert tagger.genre_in_top(rock, "classical") is None  # MSD has no classical tag
    assert tagger.genre_tag("hip hop") == "Hip-Hop"
    with pytest.raises(ModelInputError, match="unknown genre"):
        tagger.genre_tag("polka")


def test_a_clip_goes_through_the_network_once(clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    tagger = MusicnnTagger()
    runs = []
    run = tagger._run
    monkeypatch.setattr(tagger, "_run", lambda audio, rate: runs.append(rate) or run(audio, rate))
    embeddings = tagger.embeddings(clips[0], SAMPLE_RATE)  # FAD embeds it ...
    tags = tagger.tags(clips[0].copy(), SAMPLE_RATE)  # ... and the tag KL reads it: one pass
    assert len(runs) == 1 and not embeddings.flags.writeable
    np.testing.assert_array_equal(tags, tagger.taggram(clips[0], SAMPLE_RATE).mean(axis=0))
    tagger.tags(clips[1], SAMPLE_RATE)  # another clip, and the same clip at another rate, are new work
    tagger.tags(clips[0], 32_000)
    assert len(runs) == 3


def test_which_genres_the_tagger_has_tags_for(tagger: MusicnnTagger) -> None:
    assert tagger.has_tag_for("rock") and tagger.has_tag_for("hip hop")
    assert not tagger.has_tag_for("reggae") and not tagger.has_tag_for("polka")


def test_tag_names_and_genre_table() -> None:
    msd = tag_names("MSD_musicnn")
    assert len(msd) == 50 and msd[:3] == ("rock", "pop", "alternative") and "Hip-Hop" in msd
    assert len(tag_names("MTT_musicnn")) == 50 and "classical" in tag_names("MTT_musicnn")
    for model in MODELS:
        assert set(GENRE_TAGS[model]) == set(GENRES)  # every corpus genre is mapped, known or None
        assert {t for t in GENRE_TAGS[model].values() if t} <= set(tag_names(model))


def test_musicnn_embedder(tagger: MusicnnTagger, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("model.music_tagger.MusicnnTagger", lambda: tagger)  # the module's network, not a reload
    assert "musicnn" in EMBEDDERS
    embedder = make_embedder("musicnn")
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.sample_rate) == ("musicnn", EMBEDDING_DIM, 16_000)
    assert "penultimate" in embedder.description and "MSD_musicnn" in embedder.description
    seven_patches = np.tile(clips[1], 4)[: 7 * 187 * 256]  # 22.3 s: 7 full patches
    frames = embedder.embed(seven_patches, SAMPLE_RATE)
    assert frames.shape == (7, EMBEDDING_DIM) and frames.dtype == np.float32
    with pytest.raises(ModelInputError, match=r"at least 2\.976 s"):
        embedder.embed(clips[0][:47_615], SAMPLE_RATE)
