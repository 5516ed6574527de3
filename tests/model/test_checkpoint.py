"""Saving and loading: round trip, atomicity, bad directories, and facebook/musicgen-small's layout."""

import json

import numpy as np
import pytest
import torch
from transformers import (
    EncodecFeatureExtractor,
    EncodecModel,
    MusicgenForCausalLM,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from model import GenerationParams, ModelInputError, MusicGenerator
from model.build import codec_config, decoder_config
from model.checkpoint import CARD_FILE, ModelCard, load_model, save_model
from tests.conftest import MICRO

pytestmark = pytest.mark.unit


def test_round_trip_gives_the_same_music(micro, tmp_path):
    params = GenerationParams(duration=0.3, seed=9)
    before = micro.generate(["reggae"], params).audio
    card = ModelCard.for_preset(MICRO, data_version="abc123", training_commit="deadbeef", metrics={"fad": 1.5})
    save_model(micro.model, micro.processor, tmp_path / "copy", card)
    reloaded = MusicGenerator.load(tmp_path / "copy")
    assert np.array_equal(reloaded.generate(["reggae"], params).audio, before)
    assert reloaded.card.data_version == "abc123" and reloaded.card.metrics == {"fad": 1.5}
    assert reloaded.card.context_seconds == MICRO.context_seconds


def test_a_failed_save_leaves_the_old_model_untouched(micro, tmp_path, monkeypatch):
    target = save_model(micro.model, micro.processor, tmp_path / "m", ModelCard(preset="first"))
    before = sorted(p.name for p in target.iterdir())

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(micro.processor, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(micro.model, micro.processor, target, ModelCard(preset="second"))
    assert sorted(p.name for p in target.iterdir()) == before
    assert json.loads((target / CARD_FILE).read_text())["preset"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging folder left behind


def test_bad_directories_are_named(micro_dir, tmp_path):
    with pytest.raises(ModelInputError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelInputError, match=r"no config\.json"):
        load_model(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in micro_dir.iterdir():
        (corrupt / path.name).write_bytes(path.read_bytes())
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelInputError, match="cannot load the model"):
        load_model(corrupt)
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(ModelInputError, match="cannot load the model"):
        load_model(corrupt)


def _tiny_t5_musicgen(directory):
    """A facebook/musicgen-small-shaped directory in miniature: T5 encoder, T5 tokenizer, no musicops card."""
    words = ["jazz", "rock", "piano", "drums", "guitar", "slow", "fast", "happy", "sad", "with", "and", "a", "the"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -float(i)) for i, w in enumerate(words)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    text = T5EncoderModel(
        T5Config(
            vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
        )
    )
    model = MusicgenForConditionalGeneration(
        text_encoder=text,
        audio_encoder=EncodecModel(codec_config(MICRO)),
        decoder=MusicgenForCausalLM(decoder_config(MICRO)),
    )
    model.generation_config.decoder_start_token_id = model.generation_config.pad_token_id = 64
    model.save_pretrained(directory)
    MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000), tokenizer=tokenizer
    ).save_pretrained(directory)
    return model


def test_loads_the_musicgen_small_layout(tmp_path):
    reference = _tiny_t5_musicgen(tmp_path / "musicgen-small-like")
    generator = MusicGenerator.load(tmp_path / "musicgen-small-like")
    assert generator.card.preset == "external"
    assert generator.model.config.text_encoder.model_type == "t5"
    assert generator.model.config.text_encoder._attn_implementation == "sdpa"
    result = generator.generate(["slow jazz with piano", "rock"], GenerationParams(duration=0.3, temperature=0.0))
    assert result.audio.shape == (2, round(0.3 * 32_000))
    # the same weights as saved: projection from T5's 32-d states to the decoder's 64
    assert torch.equal(generator.model.enc_to_dec_proj.weight, reference.enc_to_dec_proj.weight)
