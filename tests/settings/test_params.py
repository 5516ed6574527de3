"""settings.params: one definition of each default, which the stages, servers and the cluster's copy agree with."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from model.generation_params import GenerationParams
from settings.params import SECTIONS, EvaluateParams, ParamsError, section_from
from tests.support import REPO

pytestmark = pytest.mark.unit


def test_params_yaml_names_every_setting_of_every_section_and_loads():
    document = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(document) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(document[name]) == {f.name for f in fields(cls)}, f"params.yaml's {name}: differs from {cls}"
        section_from(document, name)


def test_the_evaluations_generation_defaults_are_generations():
    evaluate, generation = EvaluateParams(), GenerationParams()
    for name in ("duration", "guidance_scale", "temperature", "top_k"):
        assert getattr(evaluate, name) == getattr(generation, name)


def test_an_unknown_key_or_a_bad_value_is_named():
    with pytest.raises(ParamsError, match=r"unknown key.*stepz"):
        section_from({"train": {"stepz": 3}}, "train")
    with pytest.raises(ParamsError, match=r"monitor\.max_drift_share"):
        section_from({"monitor": {"max_drift_share": 2}}, "monitor")
