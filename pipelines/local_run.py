"""Run the whole pipeline on this machine with `kfp.local`: every step a subprocess on this interpreter
(the project is installed in it), artifacts under a local pipeline root, caching on, and the deploy step
writing its InferenceService manifest instead of applying it (there is no cluster to apply it to)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.retrain import PIPELINE_NAME, build
from settings import paths
from settings.params import ParamsError, with_overrides


@dataclass
class LocalRun:
    """Where a local run left its artifacts: one folder per step that ran (named as KFP names the tasks);
    a step served from the cache keeps the folder of the run that made it."""

    folder: Path | None  # None when every step came from the cache
    report: Path  # the evaluation report (HTML), wherever the cache holds it
    manifest: Path | None  # the InferenceService the deploy step wrote, when the gate passed


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """`--set section.key=value` pairs as overrides, each value read as YAML (so 50 is a number)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set wants section.key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def run_local(params: dict[str, Any], root: Path = paths.PIPELINE_ROOT, cache: bool = True) -> LocalRun:
    """Run the pipeline with `params` (a params.yaml document, already overridden) under `root`."""
    from kfp import local

    params = with_overrides(params, {})  # fail here, with the key's name, not in a step
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=cache,
        cache_root=str(root / ".cache"),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # Each step would warn that its resource requests mean nothing here, and that its image is not used.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        warnings.filterwarnings("ignore", message=".*non-Python base image")
        task = build(params=params)(deploy_to_cluster=False)
    new = sorted(set(root.glob(f"{PIPELINE_NAME}-*")) - before)  # none when every step came from the cache
    folder = new[0] if new else None
    manifest = folder / "deploy" / "manifest" if folder else None  # deploy is never cached
    return LocalRun(
        folder=folder, report=Path(task.output.path), manifest=manifest if manifest and manifest.is_file() else None
    )
