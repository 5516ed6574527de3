"""`musicops base publish`: a trained model becomes the slim base model with its card, and loads again."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from model.checkpoint import load_model
from musicops.base_cli import REBUILD
from musicops.cli import app

pytestmark = pytest.mark.integration

METRICS = {  # an evaluation's metrics.json, as much of it as the card reads
    "prompts": 24,
    "fad": {"mel": {"model": 30.0, "untrained": 50.0, "real": 5.0}},
    "adherence": {"label_accuracy": {"model": 0.4, "untrained": 0.1}},
    "gain_over_untrained": {"label_accuracy": {"p_no_gain": 0.001}},
}


def test_publish_writes_a_slim_base_with_its_card(micro_dir, tmp_path):
    base = tmp_path / "models" / "base"
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps(METRICS))
    final = tmp_path / "evaluation-final"
    final.mkdir()
    (final / "metrics.json").write_text(json.dumps(METRICS | {"split": "holdout", "prompts": 12}))
    command = ["base", "publish", str(micro_dir), "--to", str(base), "--evaluation", str(evaluation)]
    command += ["--final-evaluation", str(final)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"published {micro_dir} to {base} (")
    assert "warning" not in result.output  # well under the size a model kept in git may have
    card = (base / "README.md").read_text()
    assert "preset `micro`" in card and "| data version | test |" in card
    assert REBUILD in card and "train.init_from=scratch" in REBUILD
    assert "Evaluation on 24 held-out test prompts" in card
    assert "| FAD (mel), lower is better | 30.00 | 50.00 | real floor 5.00 |" in card
    assert "| label_accuracy (genre classifier's accuracy on the generated audio) | 0.40 | 0.10 |" in card
    assert "| 0.40 | 0.10 | P(no gain) 0.001 |" in card
    # The final split's evaluation follows the test split's, titled as such.
    test_part, final_part = card.split("Evaluation on 12 prompts of the final split")
    assert "Evaluation on 24 held-out test prompts" in test_part and "| FAD (mel)" in final_part
    _, _, loaded = load_model(base)
    assert loaded.text_encoder_weights == "minilm" and loaded.data_version == "test"


def test_publish_names_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["base", "publish", str(tmp_path / "nothing"), "--to", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "b").exists()
