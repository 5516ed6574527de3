"""Directories that appear whole or not at all: build in a staging folder beside the target, then swap.

Used for model directories and for every dataset a stage writes. With a `resume_key`, the staging
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
