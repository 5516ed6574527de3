"""Save and load models in Hugging Face format, with a small model card, atomically.

A model directory is what `save_pretrained` writes for the model and its processor, plus
`musicops.json` (the card: preset, limits, data version, training commit, metrics) and, for a decoder
trained with one, the beat grid's weights (`model/beat_grid.py`). A slim directory (a model kept in git)
leaves out the bundled text encoder and stores float16. A directory
with facebook/musicgen-small's layout (no card) loads through the same code with default limits.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForTextEncoding, MusicgenForConditionalGeneration, MusicgenProcessor
from transformers.utils import logging as transformers_logging

from model.atomic_io import atomic_directory
from model.beat_grid import beat_grid_of, load_beat_grid, save_beat_grid
from model.build import configure, text_encoder_path
from model.errors import ModelInputError, first_line
from model.presets import BUNDLED_TEXT_ENCODER, Preset

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
    # The model directory this one was fine-tuned from (train.init_from; None: trained from scratch) and the
    # sha256 of its weights then: evaluation measures that model beside this one ("before" and "after").
    started_from: str | None = None
    started_from_sha256: str | None = None
    # Where the text encoder's weights are: None in model.safetensors; BUNDLED_TEXT_ENCODER ("minilm") in the
    # package that bundles them (a slim directory, `save_model(..., slim=True)`, leaves them out).
    text_encoder_weights: str | None = None
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


def _bundled_encoder() -> torch.nn.Module:
    return AutoModelForTextEncoding.from_pretrained(text_encoder_path(BUNDLED_TEXT_ENCODER), local_files_only=True)


def _has_bundled_encoder(model: MusicgenForConditionalGeneration) -> bool:
    """Whether the model's text encoder holds exactly the bundled MiniLM's weights (training keeps it frozen)."""
    bundled, own = _bundled_encoder().state_dict(), model.text_encoder.state_dict()
    return bundled.keys() == own.keys() and all(torch.equal(bundled[k], own[k].to(bundled[k].dtype)) for k in own)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def _slim_state(model: MusicgenForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The weights a slim directory holds: all but the bundled text encoder's, floating ones in float16."""
    return {
        name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith("text_encoder.")
    }


def save_model(
    model: MusicgenForConditionalGeneration,
    processor: MusicgenProcessor,
    directory: str | Path,
    card: ModelCard,
    slim: bool = False,
) -> Path:
    """Write model, processor and card to `directory`, replacing it only once everything is on disk.

    `slim` (for a model kept in git, like the base model) leaves out the text encoder's weights when they are
    the bundled MiniLM's, which the package already holds, and stores the rest in float16: loading fills the
    encoder from the package and widens the rest to float32 again."""
    grid = beat_grid_of(model.decoder)
    if slim:
        if not _has_bundled_encoder(model):
            raise ModelInputError(
                f"a slim model leaves out the text encoder, so it must be the bundled {BUNDLED_TEXT_ENCODER!r} "
                "unchanged; this model's text encoder differs"
            )
        card = replace(card, text_encoder_weights=BUNDLED_TEXT_ENCODER)
    with atomic_directory(directory) as staging:
        if grid is not None:  # in its own file: model.safetensors stays a plain MusicGen's
            del model.decoder.beat_grid
        try:
            model.save_pretrained(staging, state_dict=_slim_state(model) if slim else None)
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
    card = ModelCard.read(directory)
    slim = card.text_encoder_weights == BUNDLED_TEXT_ENCODER
    try:
        # A slim directory leaves the text encoder out on purpose (filled in below): its "MISSING" report is noise.
        with _quiet_transformers() if slim else contextlib.nullcontext():
            model = MusicgenForConditionalGeneration.from_pretrained(directory, local_files_only=True)
        processor = MusicgenProcessor.from_pretrained(directory, local_files_only=True)
    except Exception as error:  # a boundary: any failure to read the files is a bad directory
        reason = first_line(error)
        raise ModelInputError(f"cannot load the model in {directory}: {reason}") from None
    load_beat_grid(model.decoder, directory)
    if slim:
        model.text_encoder.load_state_dict(_bundled_encoder().state_dict())
    return configure(model), processor, card
