"""settings.paths is where the pipeline writes: dvc.yaml's stages write exactly those folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from settings import paths
from tests.support import REPO

pytestmark = pytest.mark.unit


def _outs(stage: dict) -> list[Path]:
    return [Path(next(iter(out)) if isinstance(out, dict) else out) for out in stage.get("outs", [])]


def test_each_dvc_stage_writes_under_a_folder_settings_paths_names():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    named = {value for value in vars(paths).values() if isinstance(value, Path)}
    homeless = {
        f"{stage}: {out}"
        for stage, spec in stages.items()
        for out in _outs(spec)
        if not any(out == folder or folder in out.parents for folder in named - {paths.ARTIFACTS})
    }
    assert not homeless, f"dvc.yaml writes where settings/paths.py names no folder: {sorted(homeless)}"


def test_the_stage_folders_are_the_ones_dvc_writes():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    written = {out for spec in stages.values() for out in _outs(spec)}
    for folder in (paths.CORPUS, paths.VALIDATION, paths.AUGMENTED, paths.CODEC, paths.TOKENS, paths.MODEL, paths.ONNX):
        assert folder in written, f"no dvc stage writes {folder}"
    assert any(paths.EVALUATION in out.parents for out in written)
