"""A scratch git (+ DVC) repository holding a copy of the project's params.yaml, for commands that change one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def scratch_repo(tmp_path: Path, dvc: bool = True) -> Path:
    """`tmp_path`/repo: `git init`, `dvc init` unless `dvc` is False, and the project's params.yaml."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    if dvc:
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    return repo
