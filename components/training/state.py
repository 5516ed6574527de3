"""Trainer checkpoints: everything `--resume` needs to continue exactly, written atomically.

A checkpoint folder holds `trainer.pt` (trainable weights, optimizer, scheduler, gradient scaler,
torch's RNG state, step, best validation loss) and `meta.json` (the same step and metrics for
people and tools, the parameters, the decoder's shape, the data's md5s and the git commit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model.atomic_io import atomic_directory
from model.errors import first_line

STATE_FILE, META_FILE = "trainer.pt", "meta.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why."""


def save_checkpoint(folder: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Replace `folder` with this checkpoint only once it is completely on disk."""
    with atomic_directory(folder) as staging:
        torch.save(state, staging / STATE_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def load_checkpoint(folder: Path, shape: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """State and meta of the checkpoint in `folder`, after checking it was made for a decoder of `shape`."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {Path(error.filename).name} is missing") from None
    except Exception as error:  # a boundary: any unreadable file is a corrupt checkpoint
        reason = first_line(error)
        raise CheckpointError(f"checkpoint {folder} is corrupt: {reason}") from None
    saved = meta.get("decoder_shape", {})
    differing = {k: (saved.get(k), v) for k, v in shape.items() if saved.get(k) != v}
    if differing:
        detail = ", ".join(f"{k} {old} in the checkpoint vs {new} now" for k, (old, new) in differing.items())
        raise CheckpointError(f"checkpoint {folder} was made for another model shape: {detail}")
    return state, meta
