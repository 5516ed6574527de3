"""What `musicops serve` and `musicops generate` use when no model is named: promoted, last trained, then base."""

from pathlib import Path

import pytest

from serving.local import FALLBACK_PRESET, default_model
from settings import paths


@pytest.mark.unit
def test_the_newest_kind_of_model_present_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert default_model() == FALLBACK_PRESET  # nothing trained: the preset with random weights
    for folder in (paths.BASE_MODEL, paths.MODEL, paths.PROMOTED / "model"):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        assert default_model() == str(folder)  # each outranks the ones before it
