"""Audio for the codec: random fixed-length crops of the corpora's train clips, and whole held-out clips.

Crops are read straight from the files (libsndfile seeks in FLAC and WAV), so a corpus of any size costs no
memory, and every choice comes from one seeded generator, so a rerun sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from components.codec import CodecError
from components.corpus.manifest import MANIFEST_FILE, Clip, read_manifest


@dataclass(frozen=True)
class AudioFile:
    path: Path
    frames: int


def _checked(corpus_dir: Path, clip: Clip, sample_rate: int) -> AudioFile:
    path = corpus_dir / clip.path
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise CodecError(f"cannot read {path}: {error}") from None
    if info.samplerate != sample_rate:
        raise CodecError(f"{path} is at {info.samplerate} Hz but data.sample_rate is {sample_rate}")
    return AudioFile(path, info.frames)


def _split(corpus_dir: Path, split: str) -> list[Clip]:
    return sorted((clip for clip in read_manifest(corpus_dir) if clip.split == split), key=lambda clip: clip.id)


def training_files(corpus_dirs: list[Path], sample_rate: int) -> list[AudioFile]:
    """Every train clip of every corpus folder (augmented folders hold only train clips)."""
    files = [_checked(folder, clip, sample_rate) for folder in corpus_dirs for clip in _split(folder, "train")]
    if not files:
        raise CodecError(f"no train clips in {', '.join(str(folder / MANIFEST_FILE) for folder in corpus_dirs)}")
    return files


def _read(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    try:
        audio = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError) as error:
        raise CodecError(f"cannot read {path}: {error}") from None
    return audio.mean(axis=1)


def validation_audio(corpus_dir: Path, count: int, sample_rate: int) -> list[np.ndarray]:
    """The first `count` valid clips of `corpus_dir` (by id), whole, as mono float32."""
    clips = _split(corpus_dir, "valid")[:count]
    if not clips:
        raise CodecError(f"{corpus_dir / MANIFEST_FILE} has no valid clips to measure the codec on")
    return [_read(_checked(corpus_dir, clip, sample_rate).path) for clip in clips]


class CropSampler:
    """Batches [batch, 1, samples] of random crops; a clip shorter than a crop is padded with silence."""

    def __init__(self, files: list[AudioFile], samples: int, seed: int) -> None:
        self.files, self.samples = files, samples
        self.rng = np.random.default_rng(seed)

    def crop(self) -> np.ndarray:
        file = self.files[self.rng.integers(len(self.files))]
        start = int(self.rng.integers(max(1, file.frames - self.samples + 1)))
        audio = _read(file.path, start, self.samples)
        return np.pad(audio, (0, self.samples - len(audio)))

    def batch(self, size: int) -> Tensor:
        return torch.from_numpy(np.stack([self.crop() for _ in range(size)]))[:, None]

    def batches(self, size: int) -> Iterator[Tensor]:
        while True:
            yield self.batch(size)
