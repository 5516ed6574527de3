"""monitoring.explain: a drift verdict says in words what drifted (the prompt words that are new, and which way
each drifted feature moved), and `musicops monitor check` prints it."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from monitoring.explain import describe_feature, prompt_terms
from monitoring.trigger import check
from tests.support.traffic import UNSEEN_GENRES, traffic

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return traffic(150, seed=1, end=NOW)


@pytest.mark.unit
def test_prompt_terms_are_the_words_frequent_in_the_window_and_rare_in_the_reference():
    reference = ["calm jazz with piano", "upbeat rock with guitar", "dark jazz with drums"] * 10
    window = ["calm cumbia with accordion", "happy cumbia with guitar", "calm jazz with piano", "Cumbia!"]
    terms = prompt_terms(window, reference)
    assert [word for word, _, _ in terms] == ["cumbia", "accordion", "happy"]
    assert terms[0][1:] == (0.75, 0.0)
    assert prompt_terms([], reference) == [] and prompt_terms(window, window) == []


@pytest.mark.unit
def test_a_feature_is_described_by_its_direction_and_medians_with_its_unit():
    phrase = describe_feature("spectral_centroid_hz", pd.Series([3000.0, 3400.0]), pd.Series([1700.0, 1900.0]))
    assert phrase == "spectral centroid higher (median 3.2e+03 Hz vs 1.8e+03 Hz)"
    quieter = describe_feature("loudness_lufs", pd.Series([-30.0]), pd.Series([-18.0]))
    assert quieter.startswith("integrated loudness lower (median -30 LUFS vs -18 LUFS)")
    assert describe_feature("prompt_embedding_2", pd.Series([None]), pd.Series([1.0])).endswith("changed")


def test_a_drift_of_unseen_genres_names_them(reference):
    window = traffic(80, seed=4, shift=["genres"], end=NOW)
    result = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True)
    assert result.verdict == "drift"
    words = result.explanation[0]
    assert words.startswith("prompts: words frequent here and rare in the reference:")
    named = [genre for genre in UNSEEN_GENRES if f"'{genre.replace('-', ' ').split()[-1]}'" in words]
    assert len(named) >= 4 and "'k'" not in words, words
    assert any(line.startswith("prompt features: prompt meaning") for line in result.explanation)


def test_louder_audio_is_described_as_louder_and_brighter(reference):
    result = check(traffic(80, seed=5, shift=["audio"], end=NOW), reference, now=NOW, max_drift_share=0.4, dry_run=True)
    audio = next(line for line in result.explanation if line.startswith("audio features:"))
    assert "integrated loudness higher" in audio and "spectral centroid higher" in audio
    assert not any(line.startswith("prompts:") for line in result.explanation)  # the same kind of prompts
