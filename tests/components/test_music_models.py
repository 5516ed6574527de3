"""Adherence judged by the pretrained musicnn tagger (components/evaluation/music_models.py): tag KL against the
real clip of the prompt, the genre among the top tags where the tagger knows it, and when it is not measured."""

import math

import numpy as np
import pytest

from components.evaluation.music_models import TOP_K, clip_tags, tag_adherence, tagger_for
from model.embedders import MusicnnEmbedder
from model.music_tagger import MusicnnTagger
from tests.support.musicnn_reference import SAMPLE_RATE, render_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tagger() -> MusicnnTagger:
    return MusicnnTagger()


@pytest.fixture(scope="module")
def tags(tagger: MusicnnTagger) -> dict[str, np.ndarray]:
    audio = {"real": [render_clip("electronic", 11, 0.15)], "model": [render_clip("classical", 12, 0.15)]}
    return {system: clips[0] for system, clips in clip_tags(tagger, audio, SAMPLE_RATE, ["model"]).items()}


def test_tag_kl_is_zero_for_the_same_tags_and_grows_for_other_music(tagger, tags):
    same = tag_adherence(tagger, tags["real"], tags["real"], {"genre": "electronic"})
    other = tag_adherence(tagger, tags["model"], tags["real"], {"genre": "electronic"})
    assert same["tag_kl"] == pytest.approx(0.0, abs=1e-9) and other["tag_kl"] > 0.05
    assert same["tag_genre"] == 1.0 and other["tag_genre"] == 0.0  # only the electronic clip's top tags say so
    assert same["tags_top"].split() == tagger.top_tags(tags["real"], TOP_K)
    assert math.isnan(tag_adherence(tagger, tags["real"], tags["real"], {}, is_real=True)["tag_kl"])


@pytest.mark.parametrize("labels", [{}, {"genre": "reggae"}, {"genre": "polka"}], ids=["none", "no-tag", "unknown"])
def test_no_genre_adherence_where_the_tagger_has_no_tag(tagger, tags, labels):
    assert "tag_genre" not in tag_adherence(tagger, tags["model"], tags["real"], labels)


def test_the_tagger_is_the_embedders_and_short_clips_are_not_tagged(tagger):
    embedder = MusicnnEmbedder()
    assert tagger_for({"musicnn": embedder}, 10.0)[0] is embedder.tagger  # one pass per clip for both
    shared, note = tagger_for({}, 3.0)
    assert isinstance(shared, MusicnnTagger) and note.startswith("MSD_musicnn")
    none, why = tagger_for({"musicnn": embedder}, 2.0)
    assert none is None and "shorter than musicnn's 2.976 s patch" in why
