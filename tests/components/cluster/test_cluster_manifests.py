"""The committed k8s/ manifests are what the builders write now, each with its header, and valid against its CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.cluster.manifests import K8S_DIR, manifests, write_manifests
from tests.support.crds import validate_against_crd

pytestmark = pytest.mark.unit

CRDS = {
    "ServingRuntime": "kserve-serving.kserve.io_servingruntimes.yaml",
    "InferenceService": "kserve-serving.kserve.io_inferenceservices.yaml",
    "ClusterTrainingRuntime": "kubeflow-trainer-trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "TrainJob": "kubeflow-trainer-trainer.kubeflow.org_trainjobs.yaml",
    "PyTorchJob": "kubeflow-training-operator-v1.9.0-kubeflow.org_pytorchjobs.yaml",
}
EXPECTED = [
    "base/serving/servingruntime.yaml",
    "base/serving/inferenceservice.yaml",
    "training/trainjob/runtime.yaml",
    "training/trainjob/trainjob.yaml",
    "training/pytorchjob/pytorchjob.yaml",
]


def test_committed_manifests_match_the_builders(tmp_path: Path):
    written = write_manifests(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in written] == EXPECTED
    stale = [
        relative
        for relative in EXPECTED
        if not (K8S_DIR / relative).is_file() or (K8S_DIR / relative).read_text() != (tmp_path / relative).read_text()
    ]
    assert not stale, f"k8s/ is stale ({', '.join(stale)}): run `python -m components.cluster.manifests`"


def test_each_file_says_what_it_is_and_how_to_apply_it_then_holds_the_object(tmp_path: Path):
    objects = manifests()
    for path in write_manifests(tmp_path):
        relative = path.relative_to(tmp_path).as_posix()
        text = path.read_text()
        header = text[: text.index("\napiVersion:")].splitlines()
        assert header and all(line.startswith("#") for line in header)
        # Each file is a resource of the kustomization it sits in (k8s/base for serving, applied through an overlay),
        # and the header names the kustomization to apply.
        root = Path("base") if relative.startswith("base/") else Path(relative).parent
        kustomization = yaml.safe_load((K8S_DIR / root / "kustomization.yaml").read_text())
        assert Path(relative).relative_to(root).as_posix() in kustomization["resources"]
        applied = "k8s/overlays/" if root == Path("base") else f"k8s/{root.as_posix()}"
        assert f"kubectl apply -k {applied}" in text
        assert yaml.safe_load(text) == objects[relative]
        assert "&id" not in text  # no YAML anchors: every part is written out


@pytest.mark.parametrize("relative", EXPECTED)
def test_each_manifest_is_valid_against_its_crd(relative: str):
    obj = manifests()[relative]
    validate_against_crd(obj, CRDS[obj["kind"]])


def test_the_training_examples_are_two_gpu_nodes_in_runs_manual():
    job = manifests()["training/trainjob/trainjob.yaml"]["spec"]
    trainer = job["trainer"]
    assert (trainer["numNodes"], trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]) == (2, 1)
    assert "/workspace/runs/manual/params.yaml" in trainer["args"]
    # The TrainJob runs on the hardened runtime committed beside it.
    runtime = manifests()["training/trainjob/runtime.yaml"]
    assert job["runtimeRef"]["name"] == runtime["metadata"]["name"] == "musicops-torch-distributed"
    service = manifests()["base/serving/inferenceservice.yaml"]
    assert service["spec"]["predictor"]["model"]["storageUri"] == "s3://musicops/models/musicgen/onnx"
    assert service["spec"]["predictor"]["serviceAccountName"] == "musicops-predictor"
