"""facebook/musicgen-small's layout at micro size: the same MusicgenConfig structure (t5-base's 12 encoder
layers, EnCodec 32 kHz with 2 LSTM layers and 4 codebooks at 50 frames/s, a 24-layer decoder over 4
codebooks) with every width shrunk, so its state dict has exactly musicgen-small's tensor names.

The real checkpoint's T5 tokenizer is a SentencePiece model; sentencepiece is not installed here, so the
micro one is transformers' T5 tokenizer built from a small unigram vocabulary (tokenizer.json).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5TokenizerFast,
)

_WORDS = "jazz piano calm rock upbeat drums bass with and at bpm slow fast guitar strings in major minor key"


def t5_tokenizer() -> T5TokenizerFast:
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = [(f"▁{word}", -1.0 - i) for i, word in enumerate(_WORDS.split())]
    chars = [(c, -20.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789▁"]
    return T5TokenizerFast(vocab=specials + words + chars, extra_ids=0)


def musicgen_small_config(micro: bool = True, codec_codebook: int = 64, decoder_codebook: int = 64) -> MusicgenConfig:
    """musicgen-small's config (micro=False: its real sizes, 2048 codes a codebook) or the micro twin."""
    if not micro:
        codec_codebook = decoder_codebook = 2048
    text = T5Config(
        vocab_size=len(t5_tokenizer()) if micro else 32128,
        d_model=24 if micro else 768,
        d_kv=8 if micro else 64,
        d_ff=32 if micro else 3072,
        num_layers=12,
        num_heads=3 if micro else 12,
    )
    codec = EncodecConfig(
        sampling_rate=32_000,
        audio_channels=1,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[50 * 4 * (codec_codebook - 1).bit_length() / 1000],  # 4 codebooks: 2.2 kbps at 2048
        codebook_size=codec_codebook,
        codebook_dim=8 if micro else 128,
        hidden_size=8 if micro else 128,
        num_filters=2 if micro else 64,
        num_residual_layers=1,
        num_lstm_layers=2,
        use_causal_conv=False,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=decoder_codebook,
        num_codebooks=4,
        hidden_size=16 if micro else 1024,
        num_hidden_layers=24,
        num_attention_heads=2 if micro else 16,
        ffn_dim=32 if micro else 4096,
        max_position_embeddings=2048,
        pad_token_id=decoder_codebook,
        bos_token_id=decoder_codebook,
        decoder_start_token_id=decoder_codebook,
    )
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


def real_musicgen_small() -> MusicgenForConditionalGeneration:
    """musicgen-small's architecture on the meta device: names and shapes, no weights, no memory."""
    with torch.device("meta"):
        return MusicgenForConditionalGeneration(musicgen_small_config(micro=False))


def micro_musicgen_small(directory: Path, seed: int = 0, **codebooks: int) -> Path:
    """A random micro model saved the way facebook/musicgen-small is: `save_pretrained` of the model and
    its processor (EnCodec feature extractor, T5 tokenizer), no musicops.json."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(musicgen_small_config(**codebooks))
    model.save_pretrained(directory)
    extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000, padding_value=0.0)
    MusicgenProcessor(feature_extractor=extractor, tokenizer=t5_tokenizer()).save_pretrained(directory)
    return directory
