"""Save and load models in Hugging Face format, with a small model card, atomically.

A model directory is what `save_pretrained` writes for the model and its processor, plus
`musicops.json` (the card: preset, limits, data version, training commit, metrics) and, for a decoder
trained with one, the beat grid's weights (`model/beat_grid.py`). A directory
with facebook/musicgen-small's layout (no card) loads through the same code with default limits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

from model.atomic_io import atomic_directory
from model.beat_grid import beat_grid_of, load_beat_grid, save_beat_grid
from model.build import configure
from model.errors import ModelInputError, first_line
from model.presets import Preset

CARD_FILE = "musicops.json"


@dataclass
class ModelCard:
    """What a model directory says about itself beyond the transformers config."""

    preset: str = "unknown"
    context_seconds: float = 30.0
    extend_stride_seconds: float = 18.0
    max_duration_seconds: float = 300.0
    data_version: str | None = None
    # The data sources beyond the main corpus it was trained on: name -> content digest (settings.data_sources),
    # so the drift check knows whether there is data this model has not seen.
    data_sources: dict[str, str] = field(default_factory=dict)
    training_commit: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: str = ""

    @classmethod
    def for_preset(cls, preset: Preset, **extra: Any) -> ModelCard:
        return cls(
            preset=preset.name,
            context_seconds=preset.context_seconds,
            extend_stride_seconds=preset.extend_stride_seconds,
            max_duration_seconds=preset.max_duration_seconds,
            **extra,
        )

    @classmethod
    def read(cls, directory: Path) -> ModelCard:
        path = directory / CARD_FILE
        if not path.is_file():
            return cls(preset="external", notes="no musicops.json: a model saved by other tools")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ModelInputError(f"model card {path} is not valid JSON: {error}") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def save_model(
    model: MusicgenForConditionalGeneration,
    processor: MusicgenProcessor,
    directory: str | Path,
    card: ModelCard,
) -> Path:
    """Write model, processor and card to `directory`, replacing it only once everything is on disk."""
    grid = beat_grid_of(model.decoder)
    with atomic_directory(directory) as staging:
        if grid is not None:  # in its own file: model.safetensors stays a plain MusicGen's
            del model.decoder.beat_grid
        try:
            model.save_pretrained(staging)
        finally:
            if grid is not None:
                model.decoder.beat_grid = grid
        save_beat_grid(model.decoder, staging)
        processor.save_pretrained(staging)
        (staging / CARD_FILE).write_text(json.dumps(asdict(card), indent=2) + "\n")
    return Path(directory)


def load_model(
    directory: str | Path,
) -> tuple[MusicgenForConditionalGeneration, MusicgenProcessor, ModelCard]:
    """Load a model directory (ours or facebook/musicgen-small's layout), or raise ModelInputError."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelInputError(f"model directory {directory} does not exist")
    if not (directory / "config.json").is_file():
        raise ModelInputError(f"{directory} is not a model directory: it has no config.json")
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(directory, local_files_only=True)
        processor = MusicgenProcessor.from_pretrained(directory, local_files_only=True)
    except Exception as error:  # a boundary: any failure to read the files is a bad directory
        reason = first_line(error)
        raise ModelInputError(f"cannot load the model in {directory}: {reason}") from None
    load_beat_grid(model.decoder, directory)
    return configure(model), processor, ModelCard.read(directory)
