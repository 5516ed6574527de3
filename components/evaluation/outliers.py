"""The model's worst prompts per metric, so an outlier is heard in the report rather than averaged away.

For FAD, a prompt's contribution is how much the model's FAD over the split falls without it:
FAD(all prompts) - FAD(all but this one), model and real clips alike left out (positive: this prompt makes
the model's FAD worse). Per-clip frame moments (bounds.ClipMoments) make each leave-one-out FAD a few small
matrix square roots. For the adherence metrics, the prompts with the worst values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from components.evaluation.adherence import ADHERENCE
from components.evaluation.bounds import ClipMoments
from model.frechet import frechet_distance

WORST = 3  # prompts listed per metric
WATCHED = ("fad_contribution", "tempo_error", "key_score", "tag_kl", "label_kl")
FAD_CONTRIBUTION = ("FAD contribution (FAD minus FAD without the prompt)", "lower")


def fad_contributions(model: list[np.ndarray], real: list[np.ndarray]) -> list[float]:
    """Per prompt (its model clip's and real clip's frames), FAD(all) - FAD(all but this prompt)."""
    generated, heard = ClipMoments(model), ClipMoments(real)
    everyone = np.arange(len(model))
    whole = frechet_distance(generated.stats(everyone), heard.stats(everyone))
    if len(model) < 3:  # two prompts leave one clip: its frames' covariance says little of the set
        return [math.nan] * len(model)
    return [
        whole - frechet_distance(generated.stats(others), heard.stats(others))
        for others in (np.delete(everyone, i) for i in everyone)
    ]


def worst_prompts(rows: list[dict[str, Any]], k: int = WORST) -> dict[str, list[dict[str, Any]]]:
    """Per watched metric the model's rows have, its k worst rows (id, caption, value), worst first."""
    model = [row for row in rows if row["system"] == "model"]
    worst = {}
    for name in WATCHED:
        better = FAD_CONTRIBUTION[1] if name == "fad_contribution" else ADHERENCE[name][1]
        scored = [row for row in model if isinstance(row.get(name), float) and math.isfinite(row[name])]
        scored.sort(key=lambda row: row[name], reverse=better == "lower")
        if scored:
            worst[name] = [{"id": row["id"], "caption": row["caption"], "value": row[name]} for row in scored[:k]]
    return worst
