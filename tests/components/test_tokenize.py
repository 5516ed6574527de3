"""The tokenize stage: codes that decode back through the same codec, an index that finds every clip."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from components import tokenize as tokenize_module
from components.corpus.manifest import read_manifest
from components.tokenize import TokenizeError, load_codec, read_tokens, tokenize
from model.audio import read_audio
from settings.params import TokenizeParams
from tests.support.micro_pipeline import micro_tokens

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    codec, tokens = micro_tokens(root)
    return root, codec, tokens


def test_every_clip_is_indexed_with_its_caption_and_codes(built):
    root, codec_dir, tokens = built
    codes, index, info = read_tokens(tokens)
    clips = {clip.id: clip for clip in read_manifest(root / "corpus")}
    assert {entry.id for entry in index} == set(clips)
    assert codes.dtype == np.int16 and codes.shape == (info["num_codebooks"], info["frames"])
    assert sum(entry.frames for entry in index) == info["frames"]
    codec = load_codec(codec_dir)
    for entry in index[:3]:
        clip = clips[entry.id]
        assert (entry.caption, entry.split, entry.labels) == (clip.caption, clip.split, clip.labels)
        audio = torch.from_numpy(read_audio(root / "corpus" / clip.path, 32_000))[None, None]
        with torch.inference_mode():
            expected = codec.encode(audio, bandwidth=codec.config.target_bandwidths[-1]).audio_codes[0, 0]
        # batched and single encodes may round a borderline latent differently (see the next test)
        stored = codes[:, entry.offset : entry.offset + entry.frames]
        assert stored.shape == tuple(expected.shape) and np.mean(stored == expected.numpy()) >= 0.99
    assert codes.max() < info["codebook_size"] and len(np.unique(codes)) > 10


def test_batch_size_barely_changes_the_tokens(built, tmp_path):
    """Batched convolutions round differently from single ones, and a latent that sits almost exactly
    between two codewords can flip (measured: 14 of 8000 codes); at least 99% must agree."""
    root, codec_dir, tokens = built
    tokenize(codec_dir, [root / "corpus"], tmp_path / "one", TokenizeParams(batch_size=1))
    single, batched = read_tokens(tmp_path / "one")[0], read_tokens(tokens)[0]
    assert single.shape == batched.shape
    assert np.mean(single == batched) >= 0.99


def test_missing_codec_and_tokens_are_named(built, tmp_path):
    root, _, _ = built
    with pytest.raises(TokenizeError, match="run the train_codec stage first"):
        tokenize(tmp_path / "nocodec", [root / "corpus"], tmp_path / "out", TokenizeParams())
    with pytest.raises(TokenizeError, match="run the tokenize stage first"):
        read_tokens(tmp_path / "nothing")
    result = CliRunner().invoke(
        tokenize_module.app, ["--codec", str(tmp_path / "nocodec"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "error:" in result.output
