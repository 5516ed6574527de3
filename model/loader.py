"""Which generator serves a model: torch for a model directory or preset, ONNX Runtime for an export folder.

Apart from both backends' modules, so that `model.onnx_backend` can build on `model.generator` without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.errors import ModelInputError
from model.generator import BaseMusicGenerator, MusicGenerator

BACKENDS = ("auto", "torch", "onnx")


def resolve_backend(source: str | Path, backend: str = "auto") -> str:
    """The backend for `source`: "auto" is onnx for an export folder (it holds .onnx graphs), else torch.

    A deployed model directory may be either (the ServingRuntime passes no backend), so "auto" finds out."""
    if backend not in BACKENDS:
        raise ModelInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    return "onnx" if any(Path(source).glob("*.onnx")) else "torch"


def load_generator(source: str | Path, backend: str = "auto", **options: Any) -> BaseMusicGenerator:
    """A generator over `source` with the named backend: "torch" (a model directory or preset name;
    options: text_encoder, dtype), "onnx" (the export stage's folder; options: runner, providers, threads),
    or "auto" (onnx for an export folder, torch otherwise)."""
    if resolve_backend(source, backend) == "torch":  # resolve_backend refuses any name but torch and onnx
        return MusicGenerator.load(source, **options)
    from model.onnx_backend import OnnxMusicGenerator

    return OnnxMusicGenerator.load(source, **options)
