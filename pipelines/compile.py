"""Compile the pipelines to `pipelines/compiled/*.yaml` (committed: a test fails when they are stale) and
write the cluster manifests the builders define under `k8s/` (the same check applies to them)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipelines.retrain import DISTRIBUTED_NAME, PIPELINE_NAME, Resources, build

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
K8S_DIR = Path(__file__).resolve().parents[1] / "k8s"


def compile_pipeline(distributed: bool, path: Path, resources: Resources | None = None) -> Path:
    """Compile one pipeline to `path`, atomically (a failed compile leaves the old file)."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".yaml", dir=path.parent, prefix=f".{path.stem}-")
    os.close(handle)
    try:
        compiler.Compiler().compile(build(distributed, resources), staging)
        os.chmod(staging, 0o644)  # mkstemp's 0600 would keep the committed file from the group
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)
    return path


def compile_all(out_dir: Path = COMPILED_DIR, resources: Resources | None = None) -> list[Path]:
    """Both pipelines: the single-pod one and the distributed-training one."""
    return [
        compile_pipeline(distributed, Path(out_dir) / f"{name}.yaml", resources)
        for distributed, name in ((False, PIPELINE_NAME), (True, DISTRIBUTED_NAME))
    ]
