"""What of the decoder trains (`train.adapter`): all of it, LoRA adapters through `peft`, or named parts.

- `full`: every weight of the decoder and the text projection, as training always did.
- `lora`: low-rank adapters on the modules `train.lora_targets` names, everything else frozen. The targets
  follow ylacombe/musicgen-dreamboothing: the attention and feed-forward projections, and the per-codebook
  output heads (`lm_heads.N`, Linear) and embeddings (`embed_tokens.N`, Embedding) as LoRA targets too,
  not `modules_to_save`: a full copy of every head and embedding would make the adapter as large as a
  third of the tiny decoder. The adapter is saved in PEFT's format beside a pointer to its base
  (`base.json`: the base's directory and the sha256 of its weights); the published model is the merge.
- `frozen`: only the parameters under the parts `train.trainable` names (`lm_heads`, `embed_tokens`,
  `layers.23`, `enc_to_dec_proj`...).

A name matches a module when it equals a run of its dotted path: `q_proj` matches every layer's self- and
cross-attention query projection, `lm_heads` every codebook's head. Only the decoder, its beat grid and
the text projection can match: the text encoder and the codec stay frozen.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn
from transformers import MusicgenForConditionalGeneration

from model.atomic_io import atomic_directory
from model.beat_grid import save_beat_grid
from settings.params import ParamsError, TrainParams

ADAPTER_DIR, POINTER_FILE = "adapter", "base.json"
_TRAINED_PARTS = ("decoder", "enc_to_dec_proj")  # the text encoder and the codec never train


def _matches(name: str, part: str) -> bool:
    return f".{part}." in f".{name}."


def _in_scope(name: str) -> bool:
    return name.split(".", 1)[0] in _TRAINED_PARTS


def _kinds(names: list[str]) -> set[str]:
    """Module names without their layer and codebook numbers: lm_heads.2 -> lm_heads."""
    return {next(part for part in reversed(name.split(".")) if not part.isdigit()) for name in names}


def lora_modules(model: MusicgenForConditionalGeneration, targets: tuple[str, ...]) -> list[str]:
    """Full names of the Linear and Embedding modules the targets name; ParamsError naming a target that
    matches none."""
    layers = [
        name
        for name, module in model.named_modules()
        if _in_scope(name) and isinstance(module, nn.Linear | nn.Embedding)
    ]
    for target in targets:
        if not any(_matches(name, target) for name in layers):
            raise ParamsError(
                f"train.lora_targets names {target!r}, but no Linear or Embedding of the decoder is called so; "
                f"the decoder's are {', '.join(sorted(_kinds(layers)))}"
            )
    return [name for name in layers if any(_matches(name, target) for target in targets)]


def apply_adapter(model: MusicgenForConditionalGeneration, params: TrainParams, keep_training: tuple[nn.Module, ...]):
    """Set up `params.adapter` on `model` in place; returns the PeftModel for lora, else None. Modules in
    `keep_training` (a beat grid new to this run) train whatever the adapter."""
    if params.adapter == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=params.lora_rank,
            lora_alpha=params.lora_alpha,
            lora_dropout=params.lora_dropout,
            target_modules=lora_modules(model, tuple(params.lora_targets)),
            bias="none",
        )
        peft_model = get_peft_model(model, config)  # LoRA layers replace the targets inside `model` itself
    elif params.adapter == "frozen":
        peft_model = None
        parameters = [(name, p) for name, p in model.named_parameters() if _in_scope(name)]
        for part in params.trainable:
            if not any(_matches(name, part) for name, _ in parameters):
                raise ParamsError(
                    f"train.trainable names {part!r}, but no parameter of the decoder is under such a part "
                    "(e.g. lm_heads, embed_tokens, layers.3, self_attn, enc_to_dec_proj)"
                )
        for name, parameter in parameters:
            parameter.requires_grad_(any(_matches(name, part) for part in params.trainable))
    else:
        return None
    for module in keep_training:
        module.requires_grad_(True)
    return peft_model


def save_adapter(peft_model, base: Path, weights_sha256: str, out_dir: Path) -> Path:
    """The LoRA adapter in PEFT's format (adapter_config.json, adapter_model.safetensors) in
    `out_dir`/adapter, with `base.json` saying which weights it adapts, written atomically."""
    peft_model.peft_config["default"].base_model_name_or_path = str(base.resolve())
    folder = out_dir / ADAPTER_DIR
    with atomic_directory(folder) as staging:
        # False: the embeddings' base weights are the base model's, unchanged; "auto" would also ask the Hub.
        peft_model.save_pretrained(staging, save_embedding_layers=False)
        decoder = peft_model.get_base_model().decoder
        if any(p.requires_grad for p in getattr(decoder, "beat_grid", nn.Module()).parameters()):
            save_beat_grid(decoder, staging)  # a grid new to this run trained in full: it is not in the base
        pointer = {"base_model": str(base.resolve()), "weights_sha256": weights_sha256}
        (staging / POINTER_FILE).write_text(json.dumps(pointer, indent=2) + "\n")
    return folder
