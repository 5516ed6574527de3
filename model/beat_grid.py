"""Beat-grid conditioning: where each decoder step sits on the beat of the tempo its prompt names.

MusicGen conditions on text through cross-attention alone, and at the scale this project trains (a few
hundred clips) the decoder does not learn from "120 BPM" in a caption to keep that beat (README,
Evaluation). The grid is a time-aligned condition summed into the decoder's input embeddings, as
audiocraft's "sum" condition fuser and MusiConGen's rhythm condition do: for every frame, the sine and
cosine of its phase within the sixteenth note, the beat and the 4/4 bar at the prompt's tempo, through
a linear layer that starts at zero (so a fresh grid changes nothing until it is trained).

Phase 0 is the first frame of the audio: the rendered corpus starts every clip on a downbeat, and a
generation starts its music there. A prompt that names no tempo (or two different ones, as merged
captions can) gets no grid, and neither do guidance's unconditional rows, so guidance pushes towards
the grid as it pushes towards the text.

The layer lives on the decoder (`lm.beat_grid`), so everything that runs the decoder finds it there;
`model/checkpoint.py` keeps its weights in their own file of the model directory, which is why a
MusicGen checkpoint without one loads and runs exactly as before. An ONNX export carries the layer
inside its decoder graphs, which then take the features as one more input (`ONNX_INPUT`, [rows, n,
FEATURES]); `ONNX_FILE` in the export folder says so and holds the frame rate the features need.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model.errors import ModelInputError, first_line

FILE = "beat_grid.safetensors"
ONNX_FILE, ONNX_INPUT = "beat_grid.json", "beat_grid"
FEATURES = 6  # sin and cos of the sixteenth, beat and bar phase
_NOTES_PER_BEAT = (4.0, 1.0, 0.25)
_TEMPO = re.compile(r"(?<![\d.])(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)
MIN_BPM, MAX_BPM = 20.0, 400.0


def prompt_tempo(prompt: str) -> float:
    """The tempo a prompt names ("... at 120 BPM ..."), or 0.0 when it names none, several different
    ones, or one outside MIN_BPM..MAX_BPM."""
    found = {float(value) for value in _TEMPO.findall(prompt)}
    if len(found) != 1:
        return 0.0
    tempo = found.pop()
    return tempo if MIN_BPM <= tempo <= MAX_BPM else 0.0


def prompt_tempi(prompts: list[str]) -> torch.Tensor:
    """`prompt_tempo` of each prompt, [B] float32."""
    return torch.tensor([prompt_tempo(p) for p in prompts], dtype=torch.float32)


def grid_features(
    tempi: torch.Tensor, first_frames: torch.Tensor | int, length: int, frame_rate: float
) -> torch.Tensor:
    """Features [B, length, FEATURES] of `length` frames per row, the first at frame `first_frames`
    (a [B] tensor or one int) of its audio, at tempo `tempi` [B] BPM; all zero where the tempo is 0."""
    first = torch.as_tensor(first_frames, dtype=torch.float64).reshape(-1, 1)
    frames = first + torch.arange(length, dtype=torch.float64)
    # float64: phase is frames x tempo, which in float32 drifts by a visible fraction of a beat in minutes.
    beats = frames / frame_rate * tempi.to(torch.float64).reshape(-1, 1) / 60.0
    parts = []
    for per_beat in _NOTES_PER_BEAT:
        angle = 2 * math.pi * beats * per_beat
        parts += [torch.sin(angle), torch.cos(angle)]
    features = torch.stack(parts, dim=-1).float()
    return features * (tempi > 0).reshape(-1, 1, 1).float()


class BeatGrid(nn.Module):
    """The grid's linear embedding into the decoder's hidden size, zero at first."""

    def __init__(self, hidden_size: int, frame_rate: float):
        super().__init__()
        self.frame_rate = float(frame_rate)
        self.proj = nn.Linear(FEATURES, hidden_size, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, tempi: torch.Tensor, first_frames: torch.Tensor | int, length: int) -> torch.Tensor:
        """Embeddings [B, length, hidden] to add to the decoder's input embeddings."""
        features = grid_features(tempi, first_frames, length, self.frame_rate)
        return self.proj(features.to(device=self.proj.weight.device, dtype=self.proj.weight.dtype))


def attach_beat_grid(lm: nn.Module, frame_rate: float) -> BeatGrid:
    """Give the decoder (a MusicgenForCausalLM) a fresh, zero grid; returns it."""
    lm.beat_grid = BeatGrid(lm.config.hidden_size, frame_rate)
    return lm.beat_grid


def beat_grid_of(lm: nn.Module) -> BeatGrid | None:
    return getattr(lm, "beat_grid", None)


def grid_embedding(lm: nn.Module, tempi: torch.Tensor | None, first_frame: int, length: int) -> torch.Tensor | None:
    """What a decoding session adds to positions first_frame.. of each row, or None when there is
    nothing to add (no grid on this decoder, or no row names a tempo)."""
    grid = beat_grid_of(lm)
    if grid is None or tempi is None or not bool((tempi > 0).any()):
        return None
    with torch.no_grad():
        return grid(tempi, first_frame, length)


@contextlib.contextmanager
def grid_in_forward(
    lm: nn.Module, tempi: torch.Tensor | None, first_frames: torch.Tensor | int, length: int
) -> Iterator[None]:
    """While open, a transformers forward of the decoder (a MusicgenForCausalLM) over `length` positions
    from an empty cache adds the grid of `tempi` [B] from frames `first_frames`: it is added to the
    positional embedding's output, which transformers sums into the token embeddings. (Not through
    `inputs_embeds`: on that path transformers' MusicgenDecoder gives every position the first one's
    positional embedding.) Nothing is added without a grid or without tempi."""
    grid = beat_grid_of(lm)
    if grid is None or tempi is None:
        yield
        return
    embedding = grid(tempi, first_frames, length)
    positions = lm.model.decoder.embed_positions
    handle = positions.register_forward_hook(lambda module, args, out: out + embedding.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


def save_beat_grid(lm: nn.Module, directory: Path) -> None:
    """Write the decoder's grid (if it has one) to `directory`/FILE."""
    grid = beat_grid_of(lm)
    if grid is not None:
        weight = grid.proj.weight.detach().to("cpu", torch.float32).contiguous()
        save_file({"proj.weight": weight}, directory / FILE, metadata={"frame_rate": repr(grid.frame_rate)})


def load_beat_grid(lm: nn.Module, directory: Path) -> BeatGrid | None:
    """Attach the grid saved in `directory` to the decoder, if the directory has one."""
    path = directory / FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            frame_rate = float((handle.metadata() or {}).get("frame_rate", "nan"))
        weight = load_file(path).get("proj.weight")
    except Exception as error:  # a boundary: any unreadable file is a bad model directory
        raise ModelInputError(f"cannot read the beat grid {path}: {first_line(error)}") from None
    hidden = lm.config.hidden_size
    if weight is None or tuple(weight.shape) != (hidden, FEATURES) or not frame_rate > 0:
        raise ModelInputError(f"{path} is not a beat grid for this decoder (hidden size {hidden})")
    grid = attach_beat_grid(lm, frame_rate)
    grid.proj.weight.data.copy_(weight)
    return grid.to(next(lm.parameters()).dtype)


def write_onnx_note(directory: Path, frame_rate: float) -> None:
    """Tell an ONNX export's readers that its decoder graphs take `ONNX_INPUT` at this frame rate."""
    note = {"input": ONNX_INPUT, "features": FEATURES, "frame_rate": frame_rate}
    (directory / ONNX_FILE).write_text(json.dumps(note, indent=2) + "\n")


def read_onnx_note(directory: Path) -> float | None:
    """The frame rate of an ONNX export's beat grid, or None when its graphs have none."""
    path = directory / ONNX_FILE
    if not path.is_file():
        return None
    try:
        frame_rate = float(json.loads(path.read_text())["frame_rate"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelInputError(f"{path} is not a beat grid note: {first_line(error)}") from None
    if not frame_rate > 0:
        raise ModelInputError(f"{path} names a frame rate of {frame_rate}, not a positive number")
    return frame_rate
