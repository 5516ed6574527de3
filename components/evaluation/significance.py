"""Whether the model's gain over a baseline is more than chance: a paired bootstrap over prompts.

The model and the untrained baseline answer the same prompts, so each prompt gives one paired
difference. Resampling the prompts with replacement (scipy.stats.bootstrap, BCa) gives a 95% interval
for the mean gain, and the share of resampled means at or below zero how likely it is that there is
no gain at all (a one-sided bootstrap P). With a few dozen prompts a gain must be large to clear it,
which is why the report shows it next to the means.
"""

from __future__ import annotations

import math

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


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
