"""train.adapter: LoRA trains only its adapters, saves them in PEFT's format beside a pointer to their base,
publishes the merged model (equal to base + adapter), and resumes exactly after SIGKILL; frozen trains only
the parts it names; gradient checkpointing changes nothing but memory and time."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn

from components.train import train
from components.training.adapters import ADAPTER_DIR, POINTER_FILE
from components.training.start import weights_digest
from components.training.state import STATE_FILE
from model.checkpoint import load_model
from settings.params import TrainParams
from tests.conftest import MICRO
from tests.support.micro_pipeline import MICRO_TRAIN, micro_tokens
from tests.support.micro_train import killed_and_straight, trained_weights

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return micro_tokens(tmp_path_factory.mktemp("micro"))


def _lora(micro_dir, **extra):
    return {**MICRO_TRAIN, "init_from": str(micro_dir), "adapter": "lora", **extra}


def _train(tokens, root, overrides):
    codec, token_dir = tokens
    params = TrainParams(**overrides)
    return train(token_dir, codec, root / "train", root / "model", params, preset=MICRO, show_progress=False)


@pytest.fixture(scope="module")
def lora_run(tokens, micro_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    _train(tokens, root, _lora(micro_dir, steps=4, eval_every=2))
    return root


def test_lora_trains_only_its_adapters(lora_run, micro_dir):
    trained = torch.load(lora_run / "train/checkpoints/last" / STATE_FILE, weights_only=True)["objective"]
    base, _, _ = load_model(micro_dir)
    rank = TrainParams().lora_rank
    # Per decoder layer: self- and cross-attention q/k/v/out and fc1/fc2; per codebook: a head and an embedding.
    linears = [m for name, m in base.decoder.named_modules() if name.endswith(("_proj", "fc1", "fc2"))]
    linears += list(base.decoder.lm_heads)
    embeddings = list(base.decoder.model.decoder.embed_tokens)
    assert len(linears) == 2 * 10 + 4 and len(embeddings) == 4
    expected = sum(rank * (m.in_features + m.out_features) for m in linears)
    expected += sum(rank * (m.num_embeddings + m.embedding_dim) for m in embeddings)
    assert all("lora_" in name for name in trained) and len(trained) == 2 * (len(linears) + len(embeddings))
    assert sum(t.numel() for t in trained.values()) == expected

    adapter = lora_run / "train" / ADAPTER_DIR
    assert {"adapter_config.json", "adapter_model.safetensors", POINTER_FILE} <= {p.name for p in adapter.iterdir()}
    pointer = json.loads((adapter / POINTER_FILE).read_text())
    assert pointer == {"base_model": str(micro_dir.resolve()), "weights_sha256": weights_digest(micro_dir)}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (16, 16, 0.05)
    assert config["base_model_name_or_path"] == str(micro_dir.resolve())
    # The published model is a plain MusicGen: the text encoder and codec are the base's, bit for bit.
    published, start = load_file(lora_run / "model/model.safetensors"), load_file(micro_dir / "model.safetensors")
    assert published.keys() == start.keys()
    assert all(torch.equal(published[k], start[k]) for k in start if not k.startswith(("decoder.", "enc_to_dec")))
    assert torch.equal(published["enc_to_dec_proj.weight"], start["enc_to_dec_proj.weight"])  # not a target


def test_the_merged_model_equals_base_plus_adapter(lora_run, micro_dir):
    base, _, _ = load_model(micro_dir)
    adapted = PeftModel.from_pretrained(base, lora_run / "train" / ADAPTER_DIR).eval()
    merged, _, _ = load_model(lora_run / "model")
    plain, _, _ = load_model(micro_dir)
    ids = torch.randint(0, MICRO.codec.codebook_size, (4 * 2, 12), generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 7, base.config.decoder.hidden_size, generator=torch.Generator().manual_seed(1))

    def logits(model):
        with torch.no_grad():
            return model.decoder(input_ids=ids, encoder_hidden_states=states).logits

    with_adapter = logits(adapted.get_base_model())
    assert (logits(merged) - with_adapter).abs().max().item() < 1e-5
    assert (logits(plain) - with_adapter).abs().max().item() > 1e-3  # the adapter did change the model


def test_a_lora_run_killed_with_sigkill_resumes_to_the_same_weights(tokens, micro_dir, tmp_path):
    overrides = _lora(micro_dir)
    straight, resumed = killed_and_straight(tokens, tmp_path, overrides)
    assert straight.keys() == resumed.keys() and all("lora_" in name for name in straight)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    merged = [load_file(tmp_path / run / "model" / "model.safetensors") for run in ("straight", "killed")]
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])


def test_frozen_trains_only_the_named_parts(tokens, micro_dir, tmp_path):
    overrides = {**MICRO_TRAIN, "steps": 2, "eval_every": 2, "init_from": str(micro_dir), "adapter": "frozen"}
    _train(tokens, tmp_path, {**overrides, "trainable": ["lm_heads", "embed_tokens"]})
    trained = torch.load(tmp_path / "train/checkpoints/last" / STATE_FILE, weights_only=True)["objective"]
    assert sorted(trained) == sorted(
        [f"decoder.lm_heads.{k}.weight" for k in range(4)]
        + [f"decoder.model.decoder.embed_tokens.{k}.weight" for k in range(4)]
    )
    published, start = load_file(tmp_path / "model/model.safetensors"), load_file(micro_dir / "model.safetensors")
    named = [k for k in start if ".lm_heads." in k or ".embed_tokens." in k]
    assert all(not torch.equal(published[k], start[k]) for k in named)
    assert all(torch.equal(published[k], start[k]) for k in start if k not in named)


def test_gradient_checkpointing_gives_the_same_lora_weights(tokens, micro_dir, tmp_path):
    short = _lora(micro_dir, steps=2, eval_every=2)
    _train(tokens, tmp_path / "plain", short)
    _train(tokens, tmp_path / "checkpointed", {**short, "gradient_checkpointing": True})
    plain, checkpointed = trained_weights(tmp_path / "plain"), trained_weights(tmp_path / "checkpointed")
    assert plain.keys() == checkpointed.keys()
    assert max((plain[k] - checkpointed[k]).abs().max().item() for k in plain) < 1e-6


def test_the_lora_layers_are_plain_again_after_merging(lora_run):
    merged, _, _ = load_model(lora_run / "model")
    assert all(type(m) is nn.Linear for m in merged.decoder.lm_heads)
    assert all(type(m) is nn.Embedding for m in merged.decoder.model.decoder.embed_tokens)
    assert not any("lora" in name or "base_layer" in name for name in merged.state_dict())
