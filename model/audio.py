"""Audio I/O: WAV and FLAC through soundfile, written atomically; resampling; loudness normalisation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from model.atomic_io import atomic_file
from model.errors import ModelInputError


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float = -14.0) -> np.ndarray:
    """Scale mono audio [samples] to `target_lufs` integrated loudness (ITU-R BS.1770, pyloudnorm).

    Silence (or audio shorter than one 400 ms gating block) is returned unchanged; the result is
    peak-limited to just under full scale so normalising never clips.
    """
    import pyloudnorm

    if audio.shape[-1] < int(0.4 * sample_rate) or not np.any(audio):
        return audio
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(audio.astype(np.float64))
    if not np.isfinite(loudness):
        return audio
    out = audio * np.float32(10.0 ** ((target_lufs - loudness) / 20.0))
    peak = float(np.max(np.abs(out)))
    return out / np.float32(peak / 0.999) if peak > 0.999 else out


def check_writable(path: Path) -> None:
    """Fail before any work if `path` cannot be written (missing folder, no permission, a directory)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ModelInputError(f"output path {path} is a directory")
    if not folder.is_dir():
        raise ModelInputError(f"output folder {folder} does not exist")
    try:  # a real probe: permission bits say nothing to root, or about read-only mounts
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ModelInputError(f"output folder {folder} is not writable: {error.strerror}") from None


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio [samples] as 16-bit PCM, WAV or FLAC by the file's suffix; a crash never
    leaves a partial file."""
    path = Path(path)
    file_format = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if file_format is None:
        raise ModelInputError(f"output {path} must end in .wav or .flac")
    check_writable(path)
    with atomic_file(path) as handle:
        sf.write(handle, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format=file_format)
    return path


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio [samples] at `sample_rate` (resampled by soxr), from any file libsndfile reads."""
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise ModelInputError(f"cannot read audio {path}: {error}") from None
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate, quality="HQ").astype(np.float32)
    return audio
