"""One-sided 95% bounds over prompts for what the gate reads: each adherence mean, and the gate embedder's FAD
of each system with the model's FAD as a share of the untrained model's (components/evaluation/significance.py
says how they are drawn). A threshold holds when its bound clears it, so a model does not pass on a lucky draw
of 24 prompts.

A resampled FAD needs the mean and covariance of the frames of the drawn clips. Each clip's frame count, sum and
sum of outer products are taken once; a draw adds up those of its clips, so a draw costs a few small matrix
square roots however long the clips are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.evaluation.gate import RATIO
from components.evaluation.significance import mean_bounds, resampled_bounds
from model.frechet import GaussianStats, frechet_distance, gaussian_stats


def adherence_bounds(rows: list[dict[str, Any]], names: list[str], systems, seed: int) -> dict[str, Any]:
    """Per adherence metric and system: its mean over the rows' prompts and the mean's bounds."""
    return {
        name: {
            system: mean_bounds([row.get(name) for row in rows if row["system"] == system], seed) for system in systems
        }
        for name in names
        if any(name in row for row in rows)
    }


class ClipMoments:
    """Per clip: frame count, sum of frames and sum of their outer products, float64."""

    def __init__(self, clips: list[np.ndarray]) -> None:
        frames = [np.asarray(clip, dtype=np.float64) for clip in clips]
        self.counts = np.array([len(f) for f in frames])
        self.sums = np.stack([f.sum(axis=0) for f in frames])
        self.outers = np.stack([f.T @ f for f in frames])

    def stats(self, picks: np.ndarray) -> GaussianStats:
        """The mean and (unbiased) covariance of the frames of the clips at `picks`, repeats counted again."""
        count = int(self.counts[picks].sum())
        mean = self.sums[picks].sum(axis=0) / count
        cov = (self.outers[picks].sum(axis=0) - count * np.outer(mean, mean)) / (count - 1)
        return GaussianStats(mean, (cov + cov.T) / 2, count)


def fad_bounds(
    frames: dict[str, list[np.ndarray]], at: list[int], systems, seed: int, resamples: int = 200
) -> dict[str, dict[str, float]]:
    """Per system, the bounds of its FAD over the prompts at `at` (their clips' frames in `frames`), and of the
    model's FAD over the untrained model's; the real system's is the FAD floor (training clips against the
    resampled test clips)."""
    moments = {system: ClipMoments([frames[system][i] for i in at]) for system in {*systems, "real"}}
    reference = gaussian_stats(np.concatenate(frames["reference"]))

    def statistic(picks: np.ndarray) -> dict[str, float]:
        real = moments["real"].stats(picks)
        fad = {
            system: frechet_distance(reference if system == "real" else moments[system].stats(picks), real)
            for system in systems
        }
        return fad | {RATIO: fad["model"] / fad["untrained"]}

    return resampled_bounds(statistic, len(at), seed, resamples)
