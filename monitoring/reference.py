"""The reference served traffic is compared with: the evaluation stage's held-out prompts and the model's audio for
them, as rows with the request log's columns.

    build_reference("artifacts/evaluation", "artifacts/model", "artifacts/monitoring/reference")

Reads what components/evaluate.py writes (per_prompt.csv's `model` rows: the held-out prompts; samples/<id>.wav:
the audio generated for them; reference/mel_{model,real}.npz: the Gaussian statistics of the mel embedder) and
writes, whole or not at all:

    reference.parquet       one row per held-out prompt: prompt features (embeddings projected as below) and the
                            features of its generated sample; request columns describe no request, so they are
                            null (time, timing, sampling settings) apart from route "evaluation", the prompt, the
                            clip's duration and cancelled = false
    prompt_projection.npz   the PromptProjection fitted on these prompts' embeddings (the request logger uses it)
    mel_model.npz, mel_real.npz
                            the evaluation's mel statistics of generated and real held-out audio, for a window's FAD
    reference.json          where it came from: the evaluation and model folders, rows, text encoder, time, and
                            the audio window its features describe (`is_current` is False for another window)

It is written to its own folder rather than into the evaluation's, which DVC tracks as a stage output.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.atomic_io import atomic_directory
from model.errors import ModelInputError
from monitoring.features import PromptProjection, TextEncoder, audio_row, embed_prompts, prompt_columns
from monitoring.schema import AUDIO_WINDOW_S, COLUMNS
from settings import paths

if TYPE_CHECKING:
    import pandas as pd

    from model.embedders import Embedder

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
PROVENANCE_FILE = "reference.json"
PROJECTION_FILE = "prompt_projection.npz"
MEL_STATS = ("mel_model.npz", "mel_real.npz")
ROUTE = "evaluation"


def _held_out(evaluation_dir: Path) -> list[tuple[str, str]]:
    """(sample id, prompt) of each held-out prompt the model generated for."""
    import pandas as pd

    table_path = evaluation_dir / "per_prompt.csv"
    if not table_path.is_file():
        raise ModelInputError(f"{evaluation_dir} holds no per_prompt.csv: run the evaluate stage first")
    table = pd.read_csv(table_path, keep_default_na=False)
    rows = table[table["system"] == "model"] if "system" in table else table
    if rows.empty:
        raise ModelInputError(f"{table_path} has no rows for the model's samples")
    return [(str(row["id"]), str(row["caption"])) for _, row in rows.iterrows()]


def _read_sample(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file():
        raise ModelInputError(f"the evaluation has no sample {path}: is the folder complete?")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


def build_reference(
    evaluation_dir: str | Path,
    model_dir: str | Path,
    out_dir: str | Path = paths.MONITOR_REFERENCE,
    text_encoder: TextEncoder | None = None,
    embedder: Embedder | None = None,
) -> Path:
    """Write the reference set of `evaluation_dir` (made with the model in `model_dir`, whose text encoder embeds
    the prompts unless `text_encoder` is given) to `out_dir`, replacing it only once all of it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitoring.request_log import arrow_schema

    evaluation_dir, out_dir = Path(evaluation_dir), Path(out_dir)
    held_out = _held_out(evaluation_dir)
    prompts = [prompt for _, prompt in held_out]
    encoder = text_encoder or TextEncoder.from_model_dir(model_dir)
    projection = PromptProjection.fit(embed_prompts(prompts, encoder))

    rows = []
    for (sample_id, prompt), prompt_row in zip(held_out, prompt_columns(prompts, projection, encoder), strict=True):
        audio, rate = _read_sample(evaluation_dir / "samples" / f"{sample_id}.wav")
        row = dict.fromkeys(COLUMNS)
        row |= {"route": ROUTE, "prompt": prompt, "duration": audio.size / rate, "cancelled": False}
        rows.append(row | prompt_row | audio_row(audio, rate, embedder))

    with atomic_directory(out_dir) as staging:
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), staging / REFERENCE_FILE)
        projection.save(staging / PROJECTION_FILE)
        copied = []
        for name in MEL_STATS:
            source = evaluation_dir / "reference" / name
            if source.is_file():
                shutil.copy2(source, staging / name)
                copied.append(name)
            else:  # the evaluation ran without the mel embedder: a window's FAD has nothing to compare with
                log.warning("%s is missing: quality drift will have no mel statistics to compare with", source)
        provenance = {
            "evaluation_dir": str(evaluation_dir),
            "model_dir": str(model_dir),
            "rows": len(rows),
            "text_encoder": encoder.name,
            "mel_stats": copied,
            "audio_window_s": AUDIO_WINDOW_S,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out_dir


def is_current(reference_dir: str | Path) -> bool:
    """Whether `reference_dir` holds a reference whose audio features describe the openings the request log's do
    (one built before, or with another AUDIO_WINDOW_S, would read every request as drift)."""
    try:
        provenance = json.loads((Path(reference_dir) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (Path(reference_dir) / REFERENCE_FILE).is_file() and provenance.get("audio_window_s") == AUDIO_WINDOW_S


def read_reference(reference_dir: str | Path) -> pd.DataFrame:
    """The reference rows as a DataFrame, read the way monitoring.request_log.read_log reads the log."""
    import pyarrow.parquet as pq

    from monitoring.request_log import arrow_schema

    path = Path(reference_dir) / REFERENCE_FILE
    if not path.is_file():
        raise ModelInputError(f"{reference_dir} holds no {REFERENCE_FILE}: build the reference first")
    return pq.read_table(path, schema=arrow_schema()).to_pandas()
