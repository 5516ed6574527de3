"""`musicops base publish`: a trained model becomes the slim base model with its card, and loads again."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from model.checkpoint import load_model
from musicops.cli import app

pytestmark = pytest.mark.integration


def test_publish_writes_a_slim_base_with_its_card(micro_dir, tmp_path):
    base = tmp_path / "models" / "base"
    result = CliRunner().invoke(app, ["base", "publish", str(micro_dir), "--to", str(base)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"published {micro_dir} to {base} (")
    assert "warning" not in result.output  # well under the size a model kept in git may have
    card = (base / "README.md").read_text()
    assert "preset `micro`" in card and "| data version | test |" in card
    assert "dvc repro train && musicops base publish artifacts/model" in card
    _, _, loaded = load_model(base)
    assert loaded.text_encoder_weights == "minilm" and loaded.data_version == "test"


def test_publish_names_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["base", "publish", str(tmp_path / "nothing"), "--to", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "b").exists()
