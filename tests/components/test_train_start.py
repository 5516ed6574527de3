"""train.init_from: scratch as before, the promoted model, a directory laid out like facebook/musicgen-small,
a missing base model, and tokens that do not fit the starting model's codec or decoder."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from components.train import train
from components.training.state import STATE_FILE
from model import GenerationParams, MusicGenerator
from model.checkpoint import load_model
from settings import paths
from settings.params import ParamsError, TrainParams, section_from
from tests.conftest import MICRO
from tests.support.micro_pipeline import MICRO_TRAIN, micro_tokens
from tests.support.musicgen_small import micro_musicgen_small, real_musicgen_small

pytestmark = pytest.mark.integration

SHORT = {**MICRO_TRAIN, "steps": 2, "eval_every": 2}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return micro_tokens(tmp_path_factory.mktemp("micro"))


def _train(tokens, root, **overrides):
    codec, token_dir = tokens
    params = TrainParams(**{**SHORT, **overrides})
    return train(token_dir, codec, root / "train", root / "model", params, preset=MICRO, show_progress=False)


def _last(root):
    return torch.load(root / "train" / "checkpoints" / "last" / STATE_FILE, weights_only=True)["objective"]


def test_scratch_is_the_default_and_trains_as_before(tokens, tmp_path):
    assert (TrainParams().init_from, TrainParams().adapter) == ("scratch", "full")
    _train(tokens, tmp_path / "default")
    _train(tokens, tmp_path / "explicit", init_from="scratch", adapter="full")
    default, explicit = _last(tmp_path / "default"), _last(tmp_path / "explicit")
    assert default.keys() == explicit.keys() and all(torch.equal(default[k], explicit[k]) for k in default)
    meta = json.loads((tmp_path / "default" / "train" / "checkpoints" / "last" / "meta.json").read_text())
    assert "start" not in meta and set(meta["decoder_shape"]) == {
        "num_layers",
        "hidden_size",
        "num_codebooks",
        "codebook_size",
        "text_hidden_size",
    }


def test_promoted_starts_from_the_promoted_models_weights_and_codec(tokens, tmp_path, micro_dir, monkeypatch):
    promoted = tmp_path / paths.PROMOTED / "model"
    shutil.copytree(micro_dir, promoted)
    monkeypatch.chdir(tmp_path)  # settings.paths are relative to the repository root
    _train(tokens, tmp_path / "run", init_from="promoted")
    start, trained = load_file(promoted / "model.safetensors"), load_file(tmp_path / "run/model/model.safetensors")
    # The codec and text encoder are the promoted model's (not the codec directory's), untouched.
    frozen = [k for k in start if k.startswith(("audio_encoder.", "text_encoder."))]
    assert frozen and all(torch.equal(start[k], trained[k]) for k in frozen)
    # The decoder moved from the promoted weights, by far less than the distance to another random start.
    moved = max((trained[k] - start[k]).abs().max().item() for k in start if k.startswith("decoder."))
    scratch = _last_scratch(tokens, tmp_path)
    apart = max((scratch[k] - start[k]).abs().max().item() for k in scratch if k.startswith("decoder."))
    assert 0 < moved < apart / 5
    meta = json.loads((tmp_path / "run" / "train" / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["start"]["directory"] == str(paths.PROMOTED / "model") and len(meta["start"]["weights_sha256"]) == 64
    assert MusicGenerator.load(tmp_path / "run" / "model").card.preset == "micro"


def _last_scratch(tokens, tmp_path):
    _train(tokens, tmp_path / "scratch", seed=1)
    return _last(tmp_path / "scratch")


def test_a_musicgen_small_layout_has_its_names_and_trains(tokens, tmp_path):
    directory = micro_musicgen_small(tmp_path / "musicgen-small")
    assert not (directory / "musicops.json").exists()
    real = real_musicgen_small().state_dict()
    micro = load_file(directory / "model.safetensors")
    # save_pretrained drops tied copies (T5's encoder embeddings are its shared ones); the rest is named alike.
    assert set(micro) <= set(real) and set(real) - set(micro) == {"text_encoder.encoder.embed_tokens.weight"}
    assert real["decoder.model.decoder.embed_tokens.0.weight"].shape == (2049, 1024)
    assert real["decoder.lm_heads.3.weight"].shape == (2048, 1024)
    assert real["enc_to_dec_proj.weight"].shape == (1024, 768)  # t5-base's 768 to the decoder's 1024
    assert sum(p.numel() for p in real_musicgen_small().decoder.parameters()) > 400e6

    _train(tokens, tmp_path / "run", init_from=str(directory))
    generator = MusicGenerator.load(tmp_path / "run" / "model")
    assert type(generator.processor.tokenizer).__name__.startswith("T5")
    assert generator.card.preset == "external" and "musicgen-small" in generator.card.notes
    assert generator.generate(["calm jazz"], GenerationParams(duration=0.1, seed=0)).audio.shape[0] == 1


def test_base_without_a_base_model_says_where_it_belongs(tokens, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError, match=r"'base'.*models/base holds no model.*base model belongs in models/base"):
        _train(tokens, tmp_path / "run", init_from="base")
    with pytest.raises(ParamsError, match=r"'promoted'.*no model has been promoted"):
        _train(tokens, tmp_path / "run", init_from="promoted")


def test_tokens_of_another_codec_or_decoder_shape_get_one_error_naming_both(tokens, tmp_path):
    other_codec = micro_musicgen_small(tmp_path / "codec128", codec_codebook=128, decoder_codebook=128)
    with pytest.raises(ParamsError) as caught:
        _train(tokens, tmp_path / "a", init_from=str(other_codec))
    message = str(caught.value)
    assert "4 codebooks of 64 at 50 frames/s" in message and "4 codebooks of 128 at 50 frames/s" in message
    assert "re-tokenize" in message
    other_decoder = micro_musicgen_small(tmp_path / "decoder128", decoder_codebook=128)
    with pytest.raises(ParamsError, match=r"have 4 codebooks of 64, but the decoder .* reads 4 codebooks of 128"):
        _train(tokens, tmp_path / "b", init_from=str(other_decoder))


def test_adapter_settings_that_cannot_work_are_named(micro_dir):
    with pytest.raises(ParamsError, match=r"train\.adapter lora .* train\.init_from is scratch"):
        section_from({"train": {"adapter": "lora"}}, "train")
    with pytest.raises(ParamsError, match=r"train\.adapter must be one of full, lora, frozen"):
        section_from({"train": {"adapter": "qlora"}}, "train")
    model, _, _ = load_model(micro_dir)
    from components.training.adapters import apply_adapter

    with pytest.raises(ParamsError, match=r"lora_targets names 'query'.*fc1, fc2, k_proj, lm_heads"):
        apply_adapter(model, TrainParams(init_from=str(micro_dir), adapter="lora", lora_targets=("query",)), ())
    with pytest.raises(ParamsError, match=r"train\.trainable names 'text_encoder'"):
        apply_adapter(model, TrainParams(init_from=str(micro_dir), adapter="frozen", trainable=("text_encoder",)), ())
