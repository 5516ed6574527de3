"""The committed k8s/ manifests are what the builders write now, each with its header, and valid against its CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.cluster_manifests import K8S_DIR, manifests, write_manifests
from tests.crd_schema import needs_crds, validate_against_crd

pytestmark = pytest.mark.unit

CRDS = {
    "ServingRuntime": "kserve-serving.kserve.io_servingruntimes.yaml",
    "InferenceService": "kserve-serving.kserve.io_inferenceservices.yaml",
    "TrainJob": "kubeflow-trainer-trainer.kubeflow.org_trainjobs.yaml",
    "PyTorchJob": "kubeflow-training-operator-v1.9.0-kubeflow.org_pytorchjobs.yaml",
}
EXPECTED = [
    "serving/servingruntime.yaml",
    "serving/inferenceservice.yaml",
    "training/trainjob.yaml",
    "training/pytorchjob.yaml",
]


def test_committed_manifests_match_the_builders(tmp_path: Path):
    written = write_manifests(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in written] == EXPECTED
    stale = [
        relative
        for relative in EXPECTED
        if not (K8S_DIR / relative).is_file() or (K8S_DIR / relative).read_text() != (tmp_path / relative).read_text()
    ]
    assert not stale, f"k8s/ is stale ({', '.join(stale)}): run `python -m components.cluster_manifests`"


def test_each_file_says_what_it_is_and_how_to_apply_it_then_holds_the_object(tmp_path: Path):
    objects = manifests()
    for path in write_manifests(tmp_path):
        relative = path.relative_to(tmp_path).as_posix()
        text = path.read_text()
        header = text[: text.index("\napiVersion:")].splitlines()
        assert header and all(line.startswith("#") for line in header)
        assert f"kubectl apply -f k8s/{relative}" in text
        assert yaml.safe_load(text) == objects[relative]
        assert "&id" not in text  # no YAML anchors: every part is written out


@needs_crds
@pytest.mark.parametrize("relative", EXPECTED)
def test_each_manifest_is_valid_against_its_crd(relative: str):
    obj = manifests()[relative]
    validate_against_crd(obj, CRDS[obj["kind"]])


def test_the_training_examples_are_two_gpu_nodes_in_runs_manual():
    trainer = manifests()["training/trainjob.yaml"]["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]) == (2, 1)
    assert "/workspace/runs/manual/params.yaml" in trainer["args"]
    service = manifests()["serving/inferenceservice.yaml"]
    assert service["spec"]["predictor"]["model"]["storageUri"] == "s3://musicops/models/musicgen/onnx"
