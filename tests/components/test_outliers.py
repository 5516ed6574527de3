"""The report's worst prompts (components/evaluation/outliers.py): leave-one-out FAD contributions against FADs
computed here from the stacked frames, and the worst rows per metric in the metric's own direction."""

import math

import numpy as np
import pytest

from components.evaluation.outliers import WORST, fad_contributions, worst_prompts
from model.frechet import frechet_audio_distance

pytestmark = pytest.mark.unit


def test_the_prompt_far_from_its_real_clip_contributes_most_fad():
    rng = np.random.default_rng(0)
    real = [rng.normal(0.0, 1.0, size=(50, 3)) for _ in range(6)]
    model = [rng.normal(0.0, 1.0, size=(50, 3)) for _ in range(6)]
    model[4] = rng.normal(3.0, 1.0, size=(50, 3))  # one prompt's audio is far off
    contributions = fad_contributions(model, real)
    assert int(np.argmax(contributions)) == 4 and contributions[4] > 0
    whole = frechet_audio_distance(np.concatenate(model), np.concatenate(real))
    without = frechet_audio_distance(np.concatenate(model[:4] + model[5:]), np.concatenate(real[:4] + real[5:]))
    assert contributions[4] == pytest.approx(whole - without, rel=1e-9)


def test_two_prompts_give_no_contributions():
    clips = [np.random.default_rng(i).normal(size=(20, 2)) for i in range(2)]
    assert all(math.isnan(value) for value in fad_contributions(clips, clips))


def test_worst_prompts_follow_each_metrics_direction():
    rows = [
        {"system": "model", "id": f"p{i}", "caption": f"c{i}", "tempo_error": 0.1 * i, "key_score": 0.2 * i}
        for i in range(5)
    ]
    rows.append({"system": "untrained", "id": "p9", "caption": "c9", "tempo_error": 9.0, "key_score": 0.0})
    rows.append({"system": "model", "id": "nan", "caption": "-", "tempo_error": math.nan, "key_score": math.nan})
    worst = worst_prompts(rows)
    assert set(worst) == {"tempo_error", "key_score"}  # no row has FAD contributions or tags
    assert [p["id"] for p in worst["tempo_error"]] == ["p4", "p3", "p2"][:WORST]  # largest error first
    assert [p["id"] for p in worst["key_score"]] == ["p0", "p1", "p2"][:WORST]  # lowest score first
    assert worst["key_score"][0] == {"id": "p0", "caption": "c0", "value": 0.0}
