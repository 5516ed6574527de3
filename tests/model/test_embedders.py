"""FAD embedders: shapes and dtypes, resampling, telling sounds apart, VGGish weights from a local file, errors.

The encodec and vggish embedders run on randomly initialised networks of the real architectures (a tiny
EncodecModel; a full-size VGGish whose state dict the test saves): real weights are not available offline,
and what is tested here (plumbing, shapes, file checks, resampling) does not depend on them. musicnn's real
weights ship in its wheel; its parity with TensorFlow is tests/model/test_musicnn.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from model.embedders import (
    EMBEDDERS,
    CodecEmbedder,
    Embedder,
    MelEmbedder,
    VGGishEmbedder,
    make_embedder,
)
from model.errors import ModelInputError
from model.frechet import frechet_audio_distance

pytestmark = pytest.mark.unit


def _music(rate: int, seconds: float = 3.0) -> np.ndarray:
    """A band-limited test signal (all partials below 4 kHz), the same function of time at any rate."""
    t = np.arange(int(seconds * rate)) / rate
    audio = sum(
        amplitude * np.sin(2 * np.pi * frequency * t * (1 + 0.05 * t))
        for frequency, amplitude in ((220, 0.2), (330, 0.1), (1234, 0.05), (3000, 0.03))
    )
    return (audio * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)


def _noise(seed: int, seconds: float = 3.0, rate: int = 16_000) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.1, size=int(seconds * rate)).astype(np.float32)


def _sine(frequency: float, seconds: float = 3.0, rate: int = 16_000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture(scope="module")
def codec() -> EncodecModel:
    torch.manual_seed(0)
    config = EncodecConfig(
        sampling_rate=16_000,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 2],
        codebook_size=64,
        target_bandwidths=[1.5],
        num_lstm_layers=1,
        audio_channels=1,
    )
    return EncodecModel(config)


@pytest.fixture(scope="module")
def vggish_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised VGGish saved in the vggish-10086976.pth layout (290 MB: removed afterwards)."""
    from torchvggish.torchvggish import _vgg

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(_vgg(postprocess=False).state_dict(), path)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vggish(vggish_weights: Path) -> VGGishEmbedder:
    return make_embedder("vggish", vggish_weights=vggish_weights)


@pytest.fixture(scope="module")
def embedders(codec: EncodecModel, vggish: VGGishEmbedder) -> dict[str, Embedder]:
    return {
        "mel": make_embedder("mel"),
        "encodec": make_embedder("encodec", codec=codec),
        "vggish": vggish,
        "musicnn": make_embedder("musicnn"),
    }


def test_factory_builds_each_embedder(embedders):
    assert tuple(embedders) == EMBEDDERS
    for name, embedder in embedders.items():
        assert isinstance(embedder, Embedder)
        assert embedder.name == name
        assert "\n" not in embedder.description and f"{embedder.sample_rate} Hz" in embedder.description
        assert "comparable only" in embedder.description
    assert isinstance(embedders["mel"], MelEmbedder) and isinstance(embedders["encodec"], CodecEmbedder)
    assert [embedders[name].dim for name in EMBEDDERS] == [64, 16, 128, 200]


@pytest.mark.parametrize(
    ("name", "rate", "frames"),
    [
        ("mel", 16_000, 1 + (48_000 - 400) // 160),
        ("mel", 44_100, 1 + (48_000 - 400) // 160),
        ("encodec", 16_000, 150),  # 50 frames/s
        ("encodec", 32_000, 150),
        ("vggish", 16_000, 3),  # one per 0.96 s
        ("vggish", 44_100, 3),
        ("musicnn", 16_000, 1),  # one per 3 s patch (187 frames of hop 256)
        ("musicnn", 44_100, 1),
    ],
)
def test_embedding_shape_dtype_and_values(embedders, name, rate, frames):
    embedder = embedders[name]
    out = embedder.embed(_music(rate), rate)
    assert out.shape == (frames, embedder.dim)
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0


@pytest.mark.parametrize("name", ["mel", "encodec"])
def test_resampling_gives_the_same_embeddings(embedders, name):
    embedder = embedders[name]
    native = embedder.embed(_music(embedder.sample_rate), embedder.sample_rate)
    for rate in (22_050, 48_000):
        other = embedder.embed(_music(rate), rate)
        n = min(len(native), len(other))
        assert abs(len(native) - len(other)) <= 1
        # Resampling error is tiny next to the embeddings themselves (edge frames included).
        assert np.linalg.norm(other[:n] - native[:n]) < 1e-2 * np.linalg.norm(native[:n])


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embedder_tells_noise_from_tones(embedders, name):
    embedder = embedders[name]

    def stack(clips):
        return np.concatenate([embedder.embed(clip, 16_000) for clip in clips])

    noise_a = stack([_noise(seed) for seed in range(4)])
    noise_b = stack([_noise(seed) for seed in range(4, 8)])
    tones = stack([_sine(frequency) for frequency in (220, 330, 440, 660)])
    same, different = frechet_audio_distance(noise_a, noise_b), frechet_audio_distance(noise_a, tones)
    assert different > 10 * same


def test_codec_chunks_and_mode(codec):
    audio = _music(16_000, seconds=2.0)
    whole = CodecEmbedder(codec).embed(audio, 16_000)
    chunked = CodecEmbedder(codec, chunk_seconds=0.5).embed(audio, 16_000)
    assert chunked.shape == whole.shape == (100, 16)
    # Away from chunk edges the encoder sees the same audio; its receptive field and LSTM state differ at edges.
    assert np.allclose(chunked[5:20], whole[5:20], rtol=0.2, atol=0.2 * np.abs(whole).max())
    codec.train()
    CodecEmbedder(codec).embed(audio, 16_000)
    assert codec.training  # the caller's mode is restored
    codec.eval()


def test_vggish_matches_the_network_on_torchvggish_examples(vggish):
    from torchvggish.vggish_input import waveform_to_examples

    audio = _music(16_000)
    examples = waveform_to_examples(audio, 16_000, return_tensor=True).detach()
    with torch.no_grad():
        features = vggish.model.features(examples)
        expected = vggish.model.embeddings(features.permute(0, 2, 3, 1).reshape(len(examples), -1))
    out = vggish.embed(audio, 16_000)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-6)
    # No final ReLU (fadtk and frechet-audio-distance drop it): outputs take both signs.
    assert (out < 0).any() and (out > 0).any()


def test_vggish_weights_from_a_folder(vggish_weights, vggish):
    embedder = VGGishEmbedder(vggish_weights.parent)
    assert embedder.weights_path == vggish_weights
    np.testing.assert_array_equal(embedder.embed(_music(16_000), 16_000), vggish.embed(_music(16_000), 16_000))


def test_bad_vggish_weights_are_named(tmp_path, vggish_weights):
    missing = tmp_path / "vggish-10086976.pth"
    with pytest.raises(ModelInputError, match=f"{missing} do not exist .*nothing is downloaded"):
        make_embedder("vggish", vggish_weights=missing)
    with pytest.raises(ModelInputError, match=f"folder {tmp_path} holds no .pth file"):
        make_embedder("vggish", vggish_weights=tmp_path)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelInputError, match=f"cannot read VGGish weights {garbage}"):
        make_embedder("vggish", vggish_weights=garbage)
    (tmp_path / "other.pth").write_bytes(b"")
    with pytest.raises(ModelInputError, match=r"holds 2 .pth files \(garbage.pth, other.pth\)"):
        make_embedder("vggish", vggish_weights=tmp_path)

    state = torch.load(vggish_weights, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("embeddings.")}, partial)
    with pytest.raises(ModelInputError, match=f"{partial} do not match .*missing 6 keys \\(embeddings.0.bias"):
        make_embedder("vggish", vggish_weights=partial)
    renamed = tmp_path / "renamed.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, renamed)
    with pytest.raises(ModelInputError, match=r"missing 18 keys .*18 unexpected keys \(module\."):
        make_embedder("vggish", vggish_weights=renamed)
    reshaped = tmp_path / "reshaped.pth"
    torch.save({**state, "embeddings.4.weight": torch.zeros(64, 4096)}, reshaped)
    with pytest.raises(ModelInputError, match=r"wrong shapes: embeddings.4.weight \(64, 4096\) != \(128, 4096\)"):
        make_embedder("vggish", vggish_weights=reshaped)


def test_factory_errors_say_what_to_pass():
    with pytest.raises(ModelInputError, match="unknown embedder 'clap'; choose one of mel, encodec, vggish, musicnn"):
        make_embedder("clap")
    with pytest.raises(ModelInputError, match=r"encodec needs an EncodecModel .*codec="):
        make_embedder("encodec")
    with pytest.raises(ModelInputError, match=r"vggish-10086976.pth \(set evaluate.vggish_weights\); no weights"):
        make_embedder("vggish")


def test_bad_audio_is_named(embedders):
    mel = embedders["mel"]
    with pytest.raises(ModelInputError, match=r"mono audio \[samples\]; got shape \(2, 16000\)"):
        mel.embed(np.zeros((2, 16_000), np.float32), 16_000)
    with pytest.raises(ModelInputError, match="non-finite"):
        mel.embed(np.full(16_000, np.nan, np.float32), 16_000)
    with pytest.raises(ModelInputError, match="float audio"):
        mel.embed(np.zeros(16_000, np.int16), 16_000)
    with pytest.raises(ModelInputError, match=r"vggish needs at least 0.960 s of audio, got 0.500 s"):
        embedders["vggish"].embed(np.zeros(8_000, np.float32), 16_000)
    with pytest.raises(ModelInputError, match=r"musicnn needs at least 2.976 s of audio, got 2.000 s"):
        embedders["musicnn"].embed(np.zeros(32_000, np.float32), 16_000)
