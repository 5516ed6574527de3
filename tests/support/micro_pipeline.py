"""Micro versions of the pipeline's artifacts for tests: a rendered corpus, an untrained codec whose
codebooks are drawn from its own encoder's latents (transformers' untrained codebooks are all zeros,
which would make every code 0), and its tokens."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import EncodecFeatureExtractor, EncodecModel

from components.prepare import prepare
from components.tokenize import tokenize
from model.build import codec_config
from settings.params import DataParams, TokenizeParams
from tests.conftest import MICRO

# train: sections for a seconds-long run of the micro preset
MICRO_TRAIN = dict(
    steps=8,
    batch_size=4,
    segment_seconds=1.0,
    eval_every=4,
    checkpoint_every=2,
    warmup_steps=2,
    learning_rate=3e-3,
    dropout=0.0,
    valid_batches=2,
)
MICRO_DATA = DataParams(count=20, clip_seconds=2.0, seed=3)
# params.yaml sections changed for a whole pipeline run (dvc repro, kfp.local) in about a minute.
MICRO_PARAMS = {
    "data": {"count": 10, "clip_seconds": 1.0, "min_clip_seconds": 0.5},
    "augment": {"copies": 1},
    "codec": {"steps": 2, "batch_size": 2, "valid_clips": 1},
    "train": {
        "init_from": "scratch",  # params.yaml fine-tunes models/base; a micro run trains its own micro model
        "adapter": "full",
        "steps": 3,
        "batch_size": 4,
        "segment_seconds": 0.5,
        "eval_every": 3,
        "checkpoint_every": 3,
        "warmup_steps": 1,
        "valid_batches": 1,
    },
    "evaluate": {
        "max_prompts": 1,
        "duration": 1.0,
        "embedders": ["mel", "encodec"],  # musicnn hears 3 s patches
        "continuation_seconds": 0.5,
        "reference_clips": 4,
        "report_samples": 1,
        "batch_size": 1,
    },
    "export": {"int8": False, "parity_prompts": 1, "parity_steps": 2},
}


def micro_codec(directory: Path, seed: int = 0) -> Path:
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        codec = EncodecModel(codec_config(MICRO))
        sample_rate = MICRO.codec.sampling_rate
        t = torch.arange(4 * sample_rate) / sample_rate
        audio = 0.3 * torch.sin(2 * torch.pi * 220 * t * (1 + t)) + 0.05 * torch.randn_like(t)
        residual = codec.encoder(audio[None, None]).transpose(1, 2).reshape(-1, MICRO.codec.hidden_size)
        for layer in codec.quantizer.layers:  # each codebook: latent frames of what is left to explain
            picks = torch.randperm(len(residual))[: layer.codebook.embed.shape[0]]
            layer.codebook.embed.copy_(residual[picks])
            layer.codebook.inited.fill_(True)
            residual = residual - layer.decode(layer.encode(residual[:, :, None]))[:, :, 0]
    codec.save_pretrained(directory)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=MICRO.codec.sampling_rate).save_pretrained(directory)
    return directory


def micro_tokens(root: Path, data: DataParams = MICRO_DATA, sources_root: Path | None = None) -> tuple[Path, Path]:
    """(codec dir, tokens dir) built under `root`; the data sources `data.sources` lists are read from
    `sources_root`."""
    corpus = root / "corpus"
    prepare(data, corpus, show_progress=False, **({"sources_root": sources_root} if sources_root else {}))
    codec = micro_codec(root / "codec")
    tokens = root / "tokens"
    tokenize(codec, [corpus], tokens, TokenizeParams(batch_size=4))
    return codec, tokens
