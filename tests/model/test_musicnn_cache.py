"""musicnn's weights: the TensorFlow checkpoint reader, the safetensors cache and its folder.

The second load must read the cache (the checkpoint reader is made to fail to prove it), and a damaged cache
(garbage, truncated, or a flipped byte in a tensor) must be rebuilt from the checkpoint, not loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import musicnn, tf_checkpoint
from model.cache_dir import CACHE_ENV, cache_dir
from model.errors import ModelInputError

pytestmark = pytest.mark.unit


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _checkpoint_prefix() -> str:
    return str(musicnn._package_files("MSD_musicnn")) + "/"


def _outputs(network: musicnn.Musicnn) -> torch.Tensor:
    with torch.inference_mode():
        return network(torch.linspace(0, 4, 187 * 96).reshape(1, 187, 96))[0]


def test_cache_dir_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "musicops"


def test_checkpoint_reader_reads_the_variables() -> None:
    weights = tf_checkpoint.read_checkpoint(_checkpoint_prefix())
    assert weights["conv2d/kernel"].shape == (7, 38, 1, 204) and weights["conv2d/kernel"].dtype == np.float32
    assert weights["dense_1/kernel"].shape == (200, 50)
    assert weights["batch_normalization_9/moving_variance"].shape == (1506,)
    assert (weights["batch_normalization_9/moving_variance"] > 0).all()


def test_checkpoint_reader_refuses_a_damaged_index(tmp_path: Path) -> None:
    source = Path(_checkpoint_prefix())
    (tmp_path / "x.index").write_bytes((source / ".index").read_bytes()[:-10])
    with pytest.raises(ModelInputError, match="not a TensorFlow checkpoint index"):
        tf_checkpoint.read_checkpoint(tmp_path / "x")
    (tmp_path / "x.index").write_bytes((source / ".index").read_bytes())
    with pytest.raises(ModelInputError, match="data shard 0 is missing"):
        tf_checkpoint.read_checkpoint(tmp_path / "x")


def test_second_load_reads_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = musicnn.load_musicnn()
    path = musicnn.cache_path()
    assert path.parent == cache / "musicnn" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left behind
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["source"]) == {"package": "musicnn 0.1.0", "model": "MSD_musicnn"}

    def no_checkpoint(prefix: str) -> dict:
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr(tf_checkpoint, "read_checkpoint", no_checkpoint)
    second = musicnn.load_musicnn()
    torch.testing.assert_close(_outputs(second), _outputs(first), rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte"])
def test_a_damaged_cache_is_rebuilt(cache: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    expected = _outputs(musicnn.load_musicnn())
    path = musicnn.cache_path()
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a safetensors file")
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-100] ^= 0x40  # inside the last tensor: the header still parses, the hash does not match
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger=musicnn.__name__):
        rebuilt = musicnn.load_musicnn()
    assert "porting the checkpoint again" in caplog.text
    torch.testing.assert_close(_outputs(rebuilt), expected, rtol=0, atol=0)
    assert musicnn._read_cache(path, musicnn.Musicnn()) is not None  # rewritten whole


def test_unknown_model() -> None:
    with pytest.raises(ModelInputError, match="unknown musicnn model"):
        musicnn.load_musicnn("MSD_vgg")
