"""Where a model came from: the md5s of its training data (as DVC records them) and the git commit."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def data_version(folder: Path) -> dict[str, str]:
    """md5 of each file in `folder` (DVC's own hash for files), by relative path."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        md5 = hashlib.md5()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                md5.update(block)
        digests[str(path.relative_to(folder))] = md5.hexdigest()
    return digests


def git_commit(folder: Path = Path(".")) -> str | None:
    """HEAD's commit, with "-dirty" when tracked files have uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")
