"""The one-sided bounds the gate reads (components/evaluation/significance.py, bounds.py), checked against the
normal approximation computed here by hand, and on FADs of systems whose distance from the real audio is known."""

import math

import numpy as np
import pytest

from components.evaluation.bounds import ClipMoments, adherence_bounds, fad_bounds
from components.evaluation.gate import RATIO
from components.evaluation.significance import mean_bounds, resampled_bounds
from model.frechet import frechet_audio_distance, gaussian_stats

pytestmark = pytest.mark.unit
Z_95 = 1.6449  # the one-sided 95% quantile of the standard normal


def test_mean_bounds_agree_with_the_normal_approximation():
    values = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    half_width = Z_95 * values.std(ddof=1) / math.sqrt(len(values))
    bounds = mean_bounds(list(values), seed=0)
    assert bounds["mean"] == pytest.approx(values.mean())
    assert bounds["low"] == pytest.approx(values.mean() - half_width, abs=0.2 * half_width)
    assert bounds["high"] == pytest.approx(values.mean() + half_width, abs=0.2 * half_width)


def test_mean_bounds_of_constant_few_and_missing_values():
    assert mean_bounds([1.0, 1.0, 1.0]) == {"mean": 1.0, "low": 1.0, "high": 1.0}
    single = mean_bounds([0.5, None, math.nan])  # one finite value: a mean, no bounds
    assert single["mean"] == 0.5 and math.isnan(single["low"]) and math.isnan(single["high"])


def test_resampled_bounds_of_a_mean_agree_with_the_normal_approximation():
    values = np.random.default_rng(2).normal(0.0, 3.0, size=300)
    half_width = Z_95 * values.std(ddof=1) / math.sqrt(len(values))
    bounds = resampled_bounds(lambda picks: {"mean": float(values[picks].mean())}, len(values), resamples=2000)
    assert bounds["mean"]["low"] == pytest.approx(-half_width + values.mean(), abs=0.2 * half_width)
    assert bounds["mean"]["high"] == pytest.approx(half_width + values.mean(), abs=0.2 * half_width)


def test_adherence_bounds_per_metric_and_system():
    rows = [{"system": s, "tempo_match": float(i % 2), "key_score": 1.0} for s in ("model", "real") for i in range(8)]
    bounds = adherence_bounds(rows, ["tempo_match", "key_score", "label_accuracy"], ("model", "real"), seed=0)
    assert set(bounds) == {"tempo_match", "key_score"}  # no row has label_accuracy
    tempo = bounds["tempo_match"]["model"]
    assert tempo["low"] < tempo["mean"] == 0.5 < tempo["high"]
    assert bounds["key_score"]["real"] == {"mean": 1.0, "low": 1.0, "high": 1.0}


def test_fad_bounds_hold_each_systems_fad_and_order_the_ratio():
    rng = np.random.default_rng(3)
    clips = lambda shift: [rng.normal(shift, 1.0, size=(40, 4)) for _ in range(12)]  # noqa: E731
    frames = {"real": clips(0.0), "reference": clips(0.0), "model": clips(0.3), "untrained": clips(2.0)}
    at = list(range(12))
    bounds = fad_bounds(frames, at, ("model", "untrained", "real"), seed=0)
    real = np.concatenate(frames["real"])
    for system in ("model", "untrained"):
        fad = frechet_audio_distance(np.concatenate(frames[system]), real)
        assert bounds[system]["low"] <= fad <= bounds[system]["high"]
    assert bounds["model"]["high"] < bounds["untrained"]["low"]  # 0.3 apart from real against 2.0 apart
    assert 0 < bounds[RATIO]["low"] <= bounds[RATIO]["high"] < 0.2


def test_clip_moments_give_the_stats_of_the_drawn_clips_frames():
    rng = np.random.default_rng(4)
    clips = [rng.normal(i, 1.0 + i, size=(30 + 5 * i, 3)) for i in range(4)]
    picks = np.array([2, 0, 2, 3])  # a draw with a repeat
    drawn = ClipMoments(clips).stats(picks)
    direct = gaussian_stats(np.concatenate([clips[i] for i in picks]))
    np.testing.assert_allclose(drawn.mean, direct.mean, rtol=1e-12)
    np.testing.assert_allclose(drawn.cov, direct.cov, rtol=1e-10)
    assert drawn.count == direct.count
