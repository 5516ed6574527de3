"""A request's length is a setting, not drift: the drift check compares the audio features of each clip's opening
window, so music like the reference's raises no alarm at 2 s or at 10 s, while other music at 2 s still does.

The audio is synthetic music whose every second is like every other (a chord and a drum at a tempo): the property
generated music has that matters here, since a 2 s generation is the opening of a 10 s one made the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import feature_group
from monitoring.features import audio_row
from monitoring.schema import COLUMNS, DRIFT_FEATURES
from monitoring.trigger import check

pytestmark = pytest.mark.integration

RATE = 16000
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
AUDIO_FEATURES = [name for name in DRIFT_FEATURES if feature_group(name) == "audio"]
MAX_SHARE = 0.4  # monitor.max_drift_share's default


def song(rng: np.random.Generator, seconds: float, bright: bool = False) -> np.ndarray:
    """A chord on a random root with a kick on each beat of a random tempo; `bright` makes other music (a hissing
    pad, a fast hi-hat) to check that real drift is still seen."""
    t = np.arange(round(seconds * RATE)) / RATE
    root = 110.0 * 2 ** (rng.integers(12) / 12)
    chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, 1.26, 1.5)) * rng.uniform(0.05, 0.15)
    tempo = rng.uniform(70, 150) * (2 if bright else 1)
    phase = (t * tempo / 60.0) % 1.0
    kick = np.sin(2 * np.pi * 60.0 * t) * np.exp(-phase * 12.0) * rng.uniform(0.2, 0.4)
    noise = rng.standard_normal(t.size) * (0.2 if bright else 0.01)
    return (chord + kick + noise).astype(np.float32)


def rows(seed: int, n: int, seconds: float, bright: bool = False) -> pd.DataFrame:
    """`n` logged requests of `seconds` each, in the log's columns, spread over the hour before NOW."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        audio = song(rng, seconds, bright)
        row = dict.fromkeys(COLUMNS) | {"time": NOW - timedelta(minutes=55) + timedelta(seconds=20 * i)}
        row |= {"route": "/v1/generate", "prompt": "music", "duration": seconds, "cancelled": False}
        row |= audio_row(audio, RATE)
        out.append(row)
    return pd.DataFrame(out, columns=list(COLUMNS))


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return rows(seed=0, n=40, seconds=10.0)


def verdict(window: pd.DataFrame, reference: pd.DataFrame):
    # dry_run: a drift here must not start a real retraining (`dvc repro`) in the repository the tests run in
    settings = dict(min_rows=30, max_drift_share=MAX_SHARE, features=AUDIO_FEATURES, dry_run=True)
    return check(window, reference, now=NOW, **settings)


@pytest.mark.parametrize("seconds", [2.0, 10.0])
def test_music_like_the_references_raises_no_alarm_at_any_length(reference, seconds):
    result = verdict(rows(seed=1, n=30, seconds=seconds), reference)
    assert result.verdict == "ok", result.line()
    assert result.group_shares["audio"] < MAX_SHARE


def test_other_music_at_2_s_is_still_drift(reference):
    result = verdict(rows(seed=2, n=30, seconds=2.0, bright=True), reference)
    assert result.verdict == "drift" and result.group_shares["audio"] >= MAX_SHARE, result.line()
