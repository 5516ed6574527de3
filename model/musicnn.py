"""musicnn (Pons & Serra, 2019) in torch: a music tagger pretrained on the Million Song Dataset or MagnaTagATune.

The `musicnn` package (ISC) ships the trained TensorFlow 1 checkpoints in its wheel; it is installed without
its dependencies (old TensorFlow and numpy pins), and only its files are read: `model.tf_checkpoint` parses
the checkpoint, the weights are ported once into this network and cached as safetensors under
`model.cache_dir`. The network follows `musicnn/models.py` (`build_musicnn`), the input follows
`musicnn/extractor.py` (`batch_data`), both read from the 0.1.0 wheel:

- 16 kHz mono; librosa's power mel spectrogram, 512-point FFT, hop 256, 96 Slaney mel bands;
- log10(10000 * mel + 1) computed in float16, as the extractor does (it casts to float16 first), except
  where float16 overflows: there the extractor yields NaN tags, and this port computes the bin in float32;
- patches of 187 frames (3 s), without overlap, the last partial patch dropped.

Front end: timbral convolutions (7 frames by 38 and 67 mel bands) and temporal ones (128, 64 and 32 frames by
one band), each max-pooled over frequency; mid end: three 7-frame convolutions with residual connections;
back end: max and mean over time, a 200-unit dense layer (the "penultimate" features), 50 tag logits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.atomic_io import atomic_file
from model.cache_dir import cache_dir
from model.errors import ModelInputError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

logger = logging.getLogger(__name__)

MODELS = ("MSD_musicnn", "MTT_musicnn")
DEFAULT_MODEL = "MSD_musicnn"

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as the extractor computes it
# The fewest samples that give one patch: librosa centres frames, so frames = 1 + samples // HOP.
MIN_SAMPLES = (PATCH_FRAMES - 1) * HOP
EMBEDDING_DIM = 200
_BN_EPS = 1e-3  # tf.layers.batch_normalization's default (torch's is 1e-5)
_CACHE_FORMAT = "musicops-musicnn-1"  # bump when the network's state dict layout changes


def log_mel_patches(audio: np.ndarray) -> np.ndarray:
    """musicnn's input: float32 patches [patches, 187, 96] of mono float audio at 16 kHz (>= MIN_SAMPLES)."""
    import librosa

    # pad_mode="reflect": librosa's default in 0.7-0.8, the librosa musicnn 0.1.0 was written against; 0.9
    # changed it to zeros, which would change each clip's first frame.
    mel = librosa.feature.melspectrogram(
        y=audio, sr=SAMPLE_RATE, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS, pad_mode="reflect"
    ).T
    # Float16 arithmetic, as the extractor does it, so the network sees the very values TensorFlow was fed.
    mel16 = mel.astype(np.float16)
    with np.errstate(over="ignore"):
        scaled = np.float16(10000) * mel16
    rep = np.log10(scaled + np.float16(1)).astype(np.float32)
    # Where 10000 * mel passes float16's 65504 (mel power above 6.55, which peak-normalised synthesised music
    # reaches), the extractor feeds inf and every output becomes NaN; those bins get the float32 value instead.
    overflow = np.isinf(scaled)
    rep[overflow] = np.log10(np.float32(10000) * mel16[overflow].astype(np.float32) + np.float32(1))
    count = rep.shape[0] // PATCH_FRAMES
    return rep[: count * PATCH_FRAMES].reshape(count, PATCH_FRAMES, N_MELS)


class _ConvBlock(nn.Module):
    """conv, ReLU, then batch norm: the order of musicnn's blocks (normalising after the activation)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = (nn.BatchNorm2d if isinstance(conv, nn.Conv2d) else nn.BatchNorm1d)(conv.out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Musicnn(nn.Module):
    """build_musicnn(num_filt_midend=64, num_units_backend=200): the MSD_musicnn and MTT_musicnn network."""

    def __init__(self, tags: int = 50, midend: int = 64, backend: int = EMBEDDING_DIM) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=_BN_EPS)
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)
        self.timbral = nn.ModuleList(
            _ConvBlock(nn.Conv2d(1, timbral, (7, int(share * N_MELS)))) for share in (0.4, 0.7)
        )
        self.temporal = nn.ModuleList(_ConvBlock(nn.Conv2d(1, temporal, (k, 1))) for k in (128, 64, 32))
        front = 2 * timbral + 3 * temporal
        self.midend = nn.ModuleList(
            _ConvBlock(nn.Conv1d(channels, midend, 7, padding=3)) for channels in (front, midend, midend)
        )
        pooled = 2 * (front + 3 * midend)  # max and mean over time of every front- and mid-end feature
        self.pool_bn = nn.BatchNorm1d(pooled, eps=_BN_EPS)
        self.dense = nn.Linear(pooled, backend)
        self.dense_bn = nn.BatchNorm1d(backend, eps=_BN_EPS)
        self.logits = nn.Linear(backend, tags)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag logits [batch, tags] and penultimate features [batch, 200] of log-mel patches [batch, 187, 96]."""
        x = self.input_bn(patches.unsqueeze(1))  # [batch, 1, time, mel]
        front = []
        for block in self.timbral:  # 'same' in time, 'valid' in frequency, as musicnn pads
            front.append(block(F.pad(x, (0, 0, 3, 3))).amax(dim=3))
        for block in self.temporal:
            k = block.conv.kernel_size[0]
            # TensorFlow's 'same' puts the odd extra row of an even kernel after, not before.
            front.append(block(F.pad(x, (0, 0, (k - 1) // 2, k // 2))).amax(dim=3))
        h = torch.cat(front, dim=1)  # [batch, 561, time]
        features = [h, self.midend[0](h)]
        for block in self.midend[1:]:
            features.append(block(features[-1]) + features[-1])
        mid = torch.cat(features, dim=1)  # [batch, 753, time]
        # TensorFlow flattens [batch, 753, (max, mean)], so each feature's max and mean sit side by side.
        pooled = torch.stack([mid.amax(dim=2), mid.mean(dim=2)], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return self.logits(penultimate), penultimate


def _tf_names(network: Musicnn) -> dict[str, str]:
    """torch module name -> TensorFlow layer scope; tf.layers number each kind in the order build_musicnn
    creates them."""
    bns = ["input_bn", "timbral.0.bn", "timbral.1.bn", *(f"temporal.{i}.bn" for i in range(3))]
    bns += [*(f"midend.{i}.bn" for i in range(3)), "pool_bn", "dense_bn"]
    convs = ["timbral.0.conv", "timbral.1.conv", *(f"temporal.{i}.conv" for i in range(3))]
    convs += [f"midend.{i}.conv" for i in range(3)]
    names = {name: "batch_normalization" + (f"_{i}" if i else "") for i, name in enumerate(bns)}
    names |= {name: "conv2d" + (f"_{i}" if i else "") for i, name in enumerate(convs)}
    return names | {"dense": "dense", "logits": "dense_1"}


def port_weights(tf_weights: dict[str, np.ndarray], network: Musicnn) -> dict[str, torch.Tensor]:
    """The torch state dict of `network` from a musicnn checkpoint's variables (Adam slots ignored)."""
    renamed = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    state = {}
    for module, scope in _tf_names(network).items():
        for tf_name, value in tf_weights.items():
            prefix, _, leaf = tf_name.rpartition("/")
            if prefix != scope:
                continue
            if leaf == "kernel" and value.ndim == 4:
                # [height, width, in, out] -> torch's [out, in, height, width]; the mid end's kernels span
                # every input feature, which Conv1d holds as channels: [7, C, 1, out] -> [out, C, 7].
                is_1d = isinstance(network.get_submodule(module), nn.Conv1d)
                value = value[:, :, 0, :].transpose(2, 1, 0) if is_1d else value.transpose(3, 2, 0, 1)
            elif leaf == "kernel":
                value = value.T  # dense [in, out] -> Linear [out, in]
            state[f"{module}.{renamed.get(leaf, leaf).replace('kernel', 'weight')}"] = torch.from_numpy(
                np.ascontiguousarray(value, dtype=np.float32)
            )
    expected = network.state_dict()
    for name, tensor in expected.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros_like(tensor)
    missing = sorted(set(expected) - set(state))
    wrong = [n for n in expected if n in state and state[n].shape != expected[n].shape]
    if missing or wrong:
        raise ModelInputError(f"the musicnn checkpoint does not fit the network: missing {missing}, wrong {wrong}")
    return state


def _package_files(model: str) -> Traversable:
    if model not in MODELS:
        raise ModelInputError(f"unknown musicnn model {model!r}; choose one of {', '.join(MODELS)}")
    try:
        return resources.files("musicnn") / model
    except ModuleNotFoundError:
        raise ModelInputError(
            "the musicnn package is not installed: `pip install --no-deps musicnn==0.1.0` (make install does)"
        ) from None


def tag_names(model: str = DEFAULT_MODEL) -> tuple[str, ...]:
    """The model's 50 tags, in its output order, from the package's configuration."""
    _package_files(model)
    from musicnn import configuration  # no TensorFlow import: the configuration holds constants only

    return tuple(configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS)


def _digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def cache_path(model: str = DEFAULT_MODEL) -> Path:
    """Where the ported weights of `model` are cached (the package version in the name: a new wheel, new file)."""
    return cache_dir() / "musicnn" / f"{model}-{metadata.version('musicnn')}.safetensors"


def _read_cache(path: Path, network: Musicnn) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or None when the file is missing, unreadable or does not hash to what it says."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises its own error type, OSError or ValueError on a damaged file
        logger.warning("musicnn weight cache %s is unreadable (%s); porting the checkpoint again", path, error)
        return None
    expected = network.state_dict()
    fits = set(state) == set(expected) and all(state[n].shape == expected[n].shape for n in expected)
    if stored.get("format") != _CACHE_FORMAT or not fits or stored.get("sha256") != _digest(state):
        logger.warning("musicnn weight cache %s is stale or corrupt; porting the checkpoint again", path)
        return None
    return state


def _write_cache(path: Path, state: dict[str, torch.Tensor], source: str) -> None:
    from safetensors.torch import save

    meta = {"format": _CACHE_FORMAT, "source": source, "sha256": _digest(state)}
    try:
        with atomic_file(path) as handle:  # a reader never sees half a file; a crash leaves the old one
            handle.write(save(state, metadata=meta))
    except OSError as error:  # a read-only home still gets a working model, ported each time
        logger.warning("cannot cache the musicnn weights at %s (%s)", path, error)


def load_musicnn(model: str = DEFAULT_MODEL) -> Musicnn:
    """The pretrained `model` (one of MODELS) in eval mode, from the weight cache or ported from the wheel."""
    from model.tf_checkpoint import read_checkpoint

    files = _package_files(model)
    network = Musicnn(tags=len(tag_names(model)))
    path = cache_path(model)
    state = _read_cache(path, network)
    if state is None:
        # The checkpoint's files are `.index` and `.data-...` inside the model's folder: an empty prefix.
        state = port_weights(read_checkpoint(str(files) + "/"), network)
        source = json.dumps({"package": f"musicnn {metadata.version('musicnn')}", "model": model})
        _write_cache(path, state, source)
    network.load_state_dict(state)
    return network.eval()
