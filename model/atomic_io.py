"""Files and directories that appear whole or not at all: write beside the target, flush, then rename over it.

`atomic_file` serves single files (audio, statistics, the request log's part files, state); `atomic_directory`
serves model directories and every dataset a stage writes. With a `resume_key`, the staging
folder survives a crash and a rerun with the same key continues in it (the key should change
whenever the contents would: e.g. a hash of the parameters).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(target: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary handle on a hidden temporary file beside `target`; on success its bytes reach the disk and
    it is renamed over `target`, on error it is removed. Readers see the old file or the new one, never a part."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(descriptor, 0o644)  # mkstemp's 0600 would carry over to the published file
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name says the file is whole
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(folder: Path) -> None:
    # The rename itself survives a power cut only once the directory entry is flushed.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_directory(target: str | Path, resume_key: str | None = None) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `target`, on error it is removed (unless resumable)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if resume_key is None:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the published folder
    else:
        staging = target.parent / f".{target.name}.partial-{resume_key}"
        staging.mkdir(exist_ok=True)
    try:
        yield staging
        _fsync_tree(staging)
        _swap_in(staging, target)
    except BaseException:
        if resume_key is None:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    # Flush file contents before the rename makes them visible, so a power cut cannot expose empty files.
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _swap_in(staging: Path, target: Path) -> None:
    # os.replace cannot replace a non-empty directory: move the old one aside first, then drop it.
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
