"""The corpus manifest: one JSON object per line, audio paths relative to the manifest's folder.

Fields: id, path, duration (s), sample_rate, caption, labels (a dict; empty for ingested audio
without labels), split (train/valid/test) and source (clips cut from one file share a source, and
a source never spans two splits, so no test audio leaks into training).

Beside it, `sources.json` records the user's data sources the corpus holds (name -> content digest,
settings.data_sources); the tokenize stage carries it on, and training writes it into the model card.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.jsonl"
SOURCES_FILE = "sources.json"  # name -> source_digest of each data source in the corpus
SPLITS = ("train", "valid", "test")


@dataclass
class Clip:
    id: str
    path: str
    duration: float
    sample_rate: int
    caption: str
    split: str
    source: str
    labels: dict[str, Any] = field(default_factory=dict)


def write_manifest(folder: str | Path, clips: list[Clip]) -> Path:
    path = Path(folder) / MANIFEST_FILE
    with open(path, "w") as handle:
        for clip in clips:
            handle.write(json.dumps(asdict(clip), sort_keys=True) + "\n")
    return path


class ManifestError(ValueError):
    """A corpus folder or manifest that cannot be read; the message names the folder or line."""


def read_manifest(folder: str | Path) -> list[Clip]:
    """The clips of the corpus in `folder`, or ManifestError naming what is missing or malformed."""
    path = Path(folder) / MANIFEST_FILE
    if not Path(folder).is_dir():
        raise ManifestError(f"corpus folder {folder} does not exist")
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_FILE} in {folder}")
    clips = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                clips.append(Clip(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise ManifestError(f"{path}:{number}: not a manifest entry ({error})") from None
    return clips


def split_counts(groups: int, shares: dict[str, float]) -> dict[str, int]:
    """How many of `groups` sources go to each split: valid and test rounded, at least one each when
    there are three or more sources; train takes the rest."""
    valid = round(groups * shares["valid"])
    test = round(groups * shares["test"])
    if groups >= 3:
        valid, test = max(valid, 1 if shares["valid"] > 0 else 0), max(test, 1 if shares["test"] > 0 else 0)
    return {"train": groups - valid - test, "valid": valid, "test": test}


def write_sources(folder: str | Path, digests: dict[str, str]) -> Path:
    """Record the data sources (name -> content digest) a corpus folder holds."""
    path = Path(folder) / SOURCES_FILE
    path.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
    return path


def read_sources(folder: str | Path) -> dict[str, str]:
    """The data sources recorded in `folder` (a corpus or tokens folder); {} when it records none (a corpus
    prepared before sources existed has no file)."""
    path = Path(folder) / SOURCES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
