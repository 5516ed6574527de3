"""Whether the model's gain over a baseline is more than chance: a paired bootstrap over prompts.

The model and the untrained baseline answer the same prompts, so each prompt gives one paired
difference. Resampling the prompts with replacement (scipy.stats.bootstrap, BCa) gives a 95% interval
for the mean gain, and the share of resampled means at or below zero how likely it is that there is
no gain at all (a one-sided bootstrap P). With a few dozen prompts a gain must be large to clear it,
which is why the report shows it next to the means.

The gate's thresholds read one-sided bounds rather than means: `mean_bounds` gives the value a mean over
prompts exceeds, and the one it stays under, each with 95% confidence (a 90% two-sided BCa interval), and
`resampled_bounds` the same for any statistic of a set of prompts (FAD, which is not a mean of per-prompt
values), from percentiles of the statistic over prompts resampled with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap

CONFIDENCE = 0.95


def paired_gain(model: list[float], baseline: list[float], better: str, seed: int = 0) -> dict[str, float]:
    """Mean gain of `model` over `baseline` per prompt (positive: better, `better` is "higher" or
    "lower"), its 95% interval, P(no gain), and the number of prompts both measured."""
    sign = 1.0 if better == "higher" else -1.0
    pairs = [(m, b) for m, b in zip(model, baseline, strict=True) if _finite(m) and _finite(b)]
    gains = sign * np.array([m - b for m, b in pairs], dtype=float)
    summary = {"gain": float(gains.mean()) if len(gains) else math.nan, "prompts": len(gains)}
    if len(gains) < 2:
        return summary | {"low": math.nan, "high": math.nan, "p_no_gain": math.nan}
    if np.ptp(gains) == 0:  # every resample has the same mean; BCa is undefined there
        gain = float(gains[0])
        return summary | {"low": gain, "high": gain, "p_no_gain": float(gain <= 0)}
    result = bootstrap(
        (gains,), np.mean, confidence_level=CONFIDENCE, n_resamples=9999, rng=np.random.default_rng(seed)
    )
    interval = result.confidence_interval
    return summary | {
        "low": float(interval.low),
        "high": float(interval.high),
        "p_no_gain": float(np.mean(result.bootstrap_distribution <= 0)),
    }


def mean_bounds(values: list[float], seed: int = 0) -> dict[str, float]:
    """The mean of the finite `values` and its one-sided 95% bounds `low` and `high` (NaN below two values)."""
    finite = np.array([v for v in values if _finite(v)], dtype=float)
    mean = float(finite.mean()) if len(finite) else math.nan
    if len(finite) < 2 or np.ptp(finite) == 0:  # no spread to resample (BCa is undefined there)
        bound = mean if len(finite) >= 2 else math.nan
        return {"mean": mean, "low": bound, "high": bound}
    result = bootstrap(
        (finite,), np.mean, confidence_level=1 - 2 * (1 - CONFIDENCE), n_resamples=9999, rng=np.random.default_rng(seed)
    )
    return {"mean": mean, "low": float(result.confidence_interval.low), "high": float(result.confidence_interval.high)}


def resampled_bounds(
    statistic: Callable[[np.ndarray], dict[str, float]], prompts: int, seed: int = 0, resamples: int = 200
) -> dict[str, dict[str, float]]:
    """Per value `statistic(indices)` returns, its one-sided 95% bounds over `prompts` resampled with replacement:
    the 5th and 95th percentiles of `resamples` draws. `statistic` gets the drawn prompt indices."""
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, prompts, size=prompts)) for _ in range(resamples)]
    tail = 100 * (1 - CONFIDENCE)
    return {
        name: {"low": float(np.percentile(values, tail)), "high": float(np.percentile(values, 100 - tail))}
        for name in draws[0]
        for values in [[draw[name] for draw in draws]]
    }


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
