"""Where training starts (`train.init_from`), and whether the tokens fit that model.

`scratch` builds a random decoder of the preset around the trained codec, as training always did. Every
other choice loads a model directory through `model.checkpoint.load_model`, which reads ours (with
`musicops.json`) and facebook/musicgen-small's layout alike: `base` (settings.paths.BASE_MODEL),
`promoted` (settings.paths.PROMOTED / "model") or a path. A loaded model brings its own codec, so the
tokens must have been made with it: tokens.json's codebooks, codebook size and frame rate must equal
that codec's, and its decoder must read that many codebooks of that size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

from model.build import build_model
from model.checkpoint import ModelCard, load_model
from model.presets import Preset
from settings import paths
from settings.params import INIT_SCRATCH, ParamsError, TrainParams


@dataclass
class Start:
    """The model training starts from, and where it came from."""

    model: MusicgenForConditionalGeneration
    processor: MusicgenProcessor
    card: ModelCard | None  # None: built from the preset (scratch)
    directory: Path | None  # the model directory it was loaded from; None for scratch
    weights_sha256: str | None  # of the directory's *.safetensors files: what an adapter was trained on


def start_directory(init_from: str) -> Path | None:
    """The model directory `init_from` names (None for scratch), or ParamsError when there is none."""
    if init_from == INIT_SCRATCH:
        return None
    named = {"base": paths.BASE_MODEL, "promoted": paths.PROMOTED / "model"}
    directory = named.get(init_from, Path(init_from).expanduser())
    if not (directory / "config.json").is_file():
        what = {
            "base": f"the project's base model belongs in {paths.BASE_MODEL} (a facebook/musicgen-small copy, or "
            "a model directory this project trained)",
            "promoted": "no model has been promoted yet (`musicops promote`)",
        }.get(init_from, "it must be a model directory (ours, or laid out like facebook/musicgen-small)")
        raise ParamsError(f"train.init_from is {init_from!r}, but {directory} holds no model (no config.json): {what}")
    return directory


def weights_digest(directory: Path) -> str:
    """sha256 over the directory's weight files (name and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _set_dropout(model: MusicgenForConditionalGeneration, dropout: float) -> None:
    """`train.dropout` on a loaded decoder: its modules copied config.dropout into float attributes when
    they were built, so setting the config alone would change nothing."""
    model.config.decoder.dropout = dropout
    for module in model.decoder.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = dropout


def load_start(params: TrainParams, preset: Preset, codec_dir: Path) -> Start:
    """The starting model of `params.init_from` (for scratch: `preset` with the codec in `codec_dir`)."""
    directory = start_directory(params.init_from)
    if directory is None:
        model, processor = build_model(preset, codec=codec_dir, seed=params.seed)
        return Start(model, processor, None, None, None)
    model, processor, card = load_model(directory)
    if params.dropout is not None:
        _set_dropout(model, params.dropout)
    return Start(model, processor, card, directory, weights_digest(directory))


def check_tokens_fit(info: dict[str, Any], start: Start, preset: Preset, tokens_dir: Path) -> None:
    """ParamsError unless the tokens (tokens.json's `info`) were made by the starting model's codec and fit
    its decoder; each message names both shapes."""
    decoder = start.model.config.decoder
    tokens = (info["num_codebooks"], info["codebook_size"])
    if start.directory is None:  # scratch: the decoder is built for the preset, which the tokens must match
        if tokens != (decoder.num_codebooks, decoder.vocab_size):
            raise ParamsError(
                f"tokens have {info['num_codebooks']} codebooks of {info['codebook_size']}; preset "
                f"{preset.name!r} expects {decoder.num_codebooks} of {decoder.vocab_size}"
            )
        return
    codec = start.model.config.audio_encoder
    codec_shape = (start.model.audio_encoder.quantizer.get_num_quantizers_for_bandwidth(codec.target_bandwidths[-1]),)
    codec_shape += (codec.codebook_size,)
    if tokens != codec_shape or round(info["frame_rate"]) != round(codec.frame_rate):
        raise ParamsError(
            f"the tokens in {tokens_dir} have {tokens[0]} codebooks of {tokens[1]} at {info['frame_rate']:g} "
            f"frames/s, but the codec of the starting model {start.directory} has {codec_shape[0]} codebooks of "
            f"{codec_shape[1]} at {codec.frame_rate:g} frames/s: re-tokenize the corpus with that model's codec"
        )
    if tokens != (decoder.num_codebooks, decoder.vocab_size):
        raise ParamsError(
            f"the tokens in {tokens_dir} have {tokens[0]} codebooks of {tokens[1]}, but the decoder of the "
            f"starting model {start.directory} reads {decoder.num_codebooks} codebooks of {decoder.vocab_size}"
        )
