"""Shared fixtures: a micro MusicGen (seconds to build, real code paths) saved the way training saves it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import MusicGenerator
from model.beat_grid import attach_beat_grid
from model.build import build_model
from model.checkpoint import ModelCard, save_model
from model.presets import CodecPreset, DecoderPreset, Preset

# The tiny preset's layout at a fraction of its size, with a 1 s context so long-form windows are cheap.
MICRO = Preset(
    name="micro",
    text_encoder="minilm",
    codec=CodecPreset(codebook_size=64, num_filters=4, hidden_size=16, num_lstm_layers=1),
    decoder=DecoderPreset(num_layers=2, hidden_size=64, num_heads=2, ffn_dim=128, max_positions=512),
    context_seconds=1.0,
    extend_stride_seconds=0.6,
    max_duration_seconds=20.0,
)


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory):
    # What the model library derives once (musicnn's ported weights) goes to this session's folder, not ~/.cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MUSICOPS_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        yield


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices run faster on one thread, and results do not depend on scheduling.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, processor = build_model(MICRO, seed=0)
    directory = tmp_path_factory.mktemp("models") / "micro"
    return save_model(model, processor, directory, ModelCard.for_preset(MICRO, data_version="test"))


@pytest.fixture(scope="session")
def micro(micro_dir: Path) -> MusicGenerator:
    return MusicGenerator.load(micro_dir)


def save_with_grid(generator: MusicGenerator, directory: Path, scale: float = 0.5) -> Path:
    """Save `generator`'s model with a random (non-zero) beat grid, so tempo prompts decode differently;
    the generator's own model is left without one."""
    grid = attach_beat_grid(generator.model.decoder, generator.frame_rate)
    with torch.no_grad():
        grid.proj.weight.copy_(scale * torch.randn(grid.proj.weight.shape, generator=torch.Generator().manual_seed(0)))
    try:
        return save_model(generator.model, generator.processor, directory, generator.card)
    finally:
        del generator.model.decoder.beat_grid


@pytest.fixture(scope="session")
def micro_grid_export(micro_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The micro model with a beat grid (in `report.out_dir.parent / "model"`) and its ONNX export."""
    from components.export import export
    from settings.params import ExportParams

    root = tmp_path_factory.mktemp("grid-export")
    model_dir = save_with_grid(MusicGenerator.load(micro_dir), root / "model")
    return export(model_dir, root / "onnx", ExportParams(int8=True))


@pytest.fixture(scope="session")
def micro_export(micro_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The micro model's ONNX export (fp32 and int8/), made once per session (about 25 s)."""
    from components.export import export
    from settings.params import ExportParams

    return export(micro_dir, tmp_path_factory.mktemp("export") / "onnx", ExportParams(int8=True))
