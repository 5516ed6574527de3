"""facebook/musicgen-small's layout at micro size: the same MusicgenConfig structure (t5-base's 12 encoder
layers, EnCodec 32 kHz with 2 LSTM layers and 4 codebooks at 50 frames/s, a 24-layer decoder over 4
codebooks) with every width shrunk, so its state dict has exactly musicgen-small's tensor names.

The real checkpoint's T5 tokenizer is a SentencePiece model; sentencepiece is not installed here, so the
micro one is transformers' T5 tokenizer built from a small unigram vocabulary (tokenizer.json).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor, T5TokenizerFast

from model.musicgen_small import musicgen_small_config

_WORDS = "jazz piano calm rock upbeat drums bass with and at bpm slow fast guitar strings in major minor key"


def t5_tokenizer() -> T5TokenizerFast:
    """A T5 tokenizer over a few music words (its vocabulary size is the micro config's)."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = [(f"▁{word}", -1.0 - i) for i, word in enumerate(_WORDS.split())]
    chars = [(c, -20.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789▁"]
    return T5TokenizerFast(vocab=specials + words + chars, extra_ids=0)


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
