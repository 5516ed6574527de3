"""The final split: clips development never reads, for the last word on a model (`musicops evaluate --final`).

The test split guided many choices made on this corpus (training recipes, gate thresholds, key estimators), so
its numbers are no longer an unbiased estimate. The holdout is the rendered corpus's recipe (`data.genres`,
clip length, sample rate) rendered again from a seed no stage uses, every clip held out; it is rendered on
first use into artifacts/data/holdout, outside the DVC pipeline, so no stage, test or tuning loop reads it.
Its prompts are evaluated beside the main corpus's training clips (the FAD floor and the label classifier).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from components.corpus.manifest import MANIFEST_FILE
from components.prepare import prepare
from model.atomic_io import atomic_file
from settings import paths
from settings.params import DataParams, ParamsError, fingerprint

SEED_OFFSET = 1_000_003  # data.seed + this: a corpus seed nothing else renders
CLIPS = 36  # 4 per genre of the nine the base model learnt; evaluate.max_prompts caps how many are read
STAMP_FILE = "holdout.params"  # the fingerprint of the data section it was rendered from


def holdout_params(data: DataParams) -> DataParams:
    """The data section that renders the holdout: the corpus's recipe from another seed, every clip held out."""
    if data.source != "rendered":
        raise ParamsError(
            f"the final split is rendered, and data.source is {data.source!r}: hold out a prepared corpus of "
            "your own and pass it with --holdout FOLDER"
        )
    splits = {"train": 0.0, "valid": 0.0, "test": 1.0}
    return replace(data, seed=data.seed + SEED_OFFSET, count=CLIPS, splits=splits, sources=[])


def ensure_holdout(data: DataParams, folder: str | Path = paths.HOLDOUT, show_progress: bool = True) -> Path:
    """The holdout corpus in `folder`, rendered first when it is not there yet or came from another recipe."""
    folder, params = Path(folder), holdout_params(data)
    stamp = folder / STAMP_FILE
    if not (folder / MANIFEST_FILE).is_file() or not stamp.is_file() or stamp.read_text() != fingerprint(params):
        prepare(params, folder, show_progress=show_progress)
        with atomic_file(stamp) as handle:
            handle.write(fingerprint(params).encode())
    return folder
