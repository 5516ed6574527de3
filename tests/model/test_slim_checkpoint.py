"""A slim model directory (the form a model kept in git takes): the bundled text encoder left out, the rest in
float16; it loads to the same model up to float16 rounding, at a fraction of the size."""

from __future__ import annotations

import pytest
import torch

from model import ModelInputError
from model.checkpoint import ModelCard, load_model, save_model
from tests.conftest import MICRO

pytestmark = pytest.mark.integration


def test_a_slim_directory_loads_the_same_model_at_a_fraction_of_the_size(micro, micro_dir, tmp_path):
    slim = save_model(micro.model, micro.processor, tmp_path / "slim", ModelCard.for_preset(MICRO), slim=True)
    size = lambda folder: sum(p.stat().st_size for p in folder.glob("*.safetensors"))  # noqa: E731
    assert size(slim) < 0.1 * size(micro_dir)  # MiniLM is most of the micro model's bytes
    model, _, card = load_model(slim)
    assert card.text_encoder_weights == "minilm"
    original = micro.model.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == original.keys()
    for name, tensor in original.items():
        assert loaded[name].dtype == tensor.dtype, name  # widened back to float32
        if name.startswith("text_encoder."):
            assert torch.equal(loaded[name], tensor), name  # from the package, exactly
        else:
            torch.testing.assert_close(loaded[name], tensor.to(torch.float16).to(tensor.dtype), rtol=0, atol=0)


def test_a_model_whose_text_encoder_changed_cannot_be_saved_slim(micro, tmp_path):
    model, processor, card = load_model(save_model(micro.model, micro.processor, tmp_path / "copy", micro.card))
    with torch.no_grad():
        next(model.text_encoder.parameters()).add_(1.0)
    with pytest.raises(ModelInputError, match="must be the bundled 'minilm' unchanged"):
        save_model(model, processor, tmp_path / "slim", card, slim=True)
    assert not (tmp_path / "slim").exists()
