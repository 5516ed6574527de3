"""Per-clip facts for validating a corpus: what the audio file really holds, beside what the manifest says.

One row per manifest entry. A file that is missing or does not decode still gets a row (with
`exists`/`decodes` False and no audio facts), so one bad file is reported instead of stopping the stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from components.corpus.manifest import Clip

CLIPPED_LEVEL = 0.999  # a sample at or above this (full scale 1.0) has hit the ceiling
LABEL_COLUMNS = ("genre", "key", "mode", "tempo")  # the labels the suite checks when a clip has them


@dataclass(frozen=True)
class AudioFacts:
    """What decoding one file found; None where the file could not be read."""

    exists: bool
    decodes: bool
    channels: int | None = None
    sample_rate: int | None = None
    duration: float | None = None
    rms: float | None = None
    clipped_share: float | None = None
    has_nan: bool | None = None


def measure_file(path: Path) -> AudioFacts:
    """Decode `path` with soundfile and measure it; a missing or undecodable file is a fact, not an error."""
    if not path.is_file():
        return AudioFacts(exists=False, decodes=False)
    try:
        audio, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError):
        return AudioFacts(exists=True, decodes=False)
    has_nan = bool(np.isnan(audio).any())
    # With NaN in the signal the RMS is NaN too, which the suite reads as missing: the NaN check reports it.
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    clipped = float(np.mean(np.abs(audio) >= CLIPPED_LEVEL)) if audio.size else 0.0
    return AudioFacts(
        exists=True,
        decodes=True,
        channels=audio.shape[1],
        sample_rate=int(sample_rate),
        duration=audio.shape[0] / sample_rate,
        rms=rms,
        clipped_share=clipped,
        has_nan=has_nan,
    )


def clip_row(corpus_dir: Path, clip: Clip) -> dict[str, Any]:
    """One table row: the manifest's fields, the audio facts, and the labels the suite checks (None if absent)."""
    labels = clip.labels or {}
    caption = clip.caption or ""  # a missing caption is an empty one, so the caption checks see it
    return {
        "id": clip.id,
        "path": clip.path,
        "split": clip.split,
        "source": clip.source,
        "dataset": labels.get("dataset"),  # a data source's name; None for the main corpus
        "caption": caption,
        "caption_chars": len(caption),
        **asdict(measure_file(corpus_dir / clip.path)),
        **{name: labels.get(name) for name in LABEL_COLUMNS},
    }


def corpus_table(corpus_dir: Path, clips: list[Clip]) -> pd.DataFrame:
    """One row per clip, plus `source_splits`: how many splits the clip's source appears in (1 when none leak)."""
    table = pd.DataFrame([clip_row(corpus_dir, clip) for clip in clips])
    table["source_splits"] = table.groupby("source")["split"].transform("nunique")
    return table
