"""Where the model library keeps what it derives once and reuses: weights ported from other formats.

Everything here can be rebuilt from an installed package, so it lives outside the repository and the
pipeline's artifacts: `~/.cache/musicops/`, or the folder MUSICOPS_CACHE_DIR names (a container with a
read-only home, a test's temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MUSICOPS_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here: writers create what they write)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "musicops"
