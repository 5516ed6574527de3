"""The data sources training reads beside the main corpus, and what each one holds.

A source is a folder `data/sources/<name>` (settings.paths.DATA_SOURCES) of audio files with their captions
(`captions.csv` with file,caption columns, or a `.txt` beside each file), put there and DVC-tracked by
`musicops data add`, and read by the prepare stage when params.yaml's `data.sources` lists its name.

`source_digest` is a content digest of such a folder (every file's relative path and bytes). The training stage
writes the digests of the sources it trained on into the model card (`ModelCard.data_sources`); the drift check
compares them with the sources on disk to know whether there is data the promoted model has not seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from settings import paths

CAPTIONS_FILE = "captions.csv"  # file,caption per audio file of the source, paths relative to its folder


def source_dir(name: str, root: str | Path = paths.DATA_SOURCES) -> Path:
    """The folder of the source `name`."""
    return Path(root) / name


def source_digest(folder: str | Path) -> str:
    """sha256 over every file under `folder` (relative path and bytes, in path order; hidden files skipped), so
    renaming, adding, removing or changing a file changes it. FileNotFoundError when the folder is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data source folder {folder} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def source_digests(names: Iterable[str], root: str | Path = paths.DATA_SOURCES) -> dict[str, str]:
    """name -> source_digest for each listed source."""
    return {name: source_digest(source_dir(name, root)) for name in names}


def unseen_sources(current: dict[str, str], trained_on: dict[str, str]) -> list[str]:
    """The sources in `current` that a model trained on `trained_on` has not seen (new, or changed since)."""
    return sorted(name for name, digest in current.items() if trained_on.get(name) != digest)
