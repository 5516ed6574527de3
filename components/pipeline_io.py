"""What the Kubeflow components (components/kubeflow.py) share: flattening a stage's metrics for a KFP
Metrics artifact, and copying a folder into an output artifact.

Kept apart from the components so that they stay a few lines each and this code is tested as plain Python
(KFP ships only a component function's own source to its container, so helpers must be importable there,
which they are: the project is installed in the image).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any


def flat_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested metrics dict under dotted names ("fad.mel.model": 40.7); booleans as 0/1.

    KFP's Metrics artifact holds scalars only, and the UI compares runs by these names."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_metrics(value, f"{name}.")
        elif isinstance(value, int | float) and math.isfinite(value):  # bool is an int: True -> 1.0
            flat[name] = float(value)
    return flat


def log_metrics(artifact: Any, values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Log `values` (flattened) to a KFP Metrics artifact, and write them as JSON at its path; returns them.

    KFP keeps logged metrics in the artifact's metadata and writes no file; kfp.local's cache then finds the
    artifact "missing" and re-runs the step every time. The file also makes the numbers readable on disk."""
    flat = flat_metrics(values, prefix)
    for name, value in flat.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    return flat


def copy_folder(source: Path, target: str | Path) -> Path:
    """Copy a stage's output folder to an artifact's path (replacing what a retried attempt left there)."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target
