"""facebook/musicgen-small's configuration: its real sizes (t5-base text encoder, EnCodec 32 kHz with 4 x 2048
codes at 50 frames/s, a 24x1024 decoder) or a micro twin with every width shrunk and the same tensor names.

Random weights of this configuration are what the fine-tuning benchmark trains (benchmarks/finetune.py), and the
micro twin is how the tests stand in for a real checkpoint directory; neither downloads anything.
"""

from __future__ import annotations

from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

MICRO_T5_VOCAB = 59  # the tests' micro T5 tokenizer (tests/support/musicgen_small.py) has 59 entries


def musicgen_small_config(micro: bool = True, codec_codebook: int = 64, decoder_codebook: int = 64) -> MusicgenConfig:
    """musicgen-small's config (micro=False: its real sizes, 2048 codes a codebook) or the micro twin."""
    if not micro:
        codec_codebook = decoder_codebook = 2048
    text = T5Config(
        vocab_size=MICRO_T5_VOCAB if micro else 32128,
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
