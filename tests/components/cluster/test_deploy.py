"""The deploy step: InferenceService and ServingRuntime valid against KServe's CRDs, storage URIs KServe reads, and
create-or-replace and readiness against a scripted stand-in for the Kubernetes API (no cluster is contacted)."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from components.cluster.deploy import (
    DeployError,
    ServiceSpec,
    apply_inference_service,
    inference_service,
    serving_runtime,
    storage_uri,
    wait_ready,
)
from components.cluster.kube import GPU, ClusterUnreachable, custom_objects_api
from tests.support.crds import validate_against_crd
from tests.support.fake_kube import FakeApi

pytestmark = pytest.mark.unit

ISVC_CRD = "kserve-serving.kserve.io_inferenceservices.yaml"
RUNTIME_CRD = "kserve-serving.kserve.io_servingruntimes.yaml"
URI = "s3://mlpipeline/v2/artifacts/retrain/run-1/export/onnx"


def isvc_status(*conditions: tuple[str, str, str, str], generation: int = 1, observed: int = 1) -> dict:
    return {
        "metadata": {"name": "musicgen", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "url": "http://musicgen.musicops.example.com",
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions],
        },
    }


def test_inference_service_is_valid_and_serves_the_export_with_the_project_runtime():
    obj = inference_service(ServiceSpec(storage_uri=URI))
    validate_against_crd(obj, ISVC_CRD)
    predictor = obj["spec"]["predictor"]
    model = predictor["model"]
    assert (model["storageUri"], model["runtime"], model["modelFormat"], model["protocolVersion"]) == (
        URI,
        "musicops-predictor",
        {"name": "musicgen"},
        "v2",
    )
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    assert model["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert GPU not in model["resources"]["limits"]
    assert "serviceAccountName" not in predictor and "nodeSelector" not in predictor
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/name": "musicgen", "app.kubernetes.io/part-of": "musicops"}
    assert (obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("musicgen", "musicops")


def test_gpus_service_account_and_node_selector_appear_only_when_asked():
    spec = ServiceSpec(
        storage_uri=URI, gpus=1, service_account="minio-reader", node_selector={"nvidia.com/gpu.present": "true"}
    )
    obj = inference_service(spec)
    validate_against_crd(obj, ISVC_CRD)
    predictor = obj["spec"]["predictor"]
    assert predictor["model"]["resources"]["requests"][GPU] == predictor["model"]["resources"]["limits"][GPU] == 1
    assert predictor["serviceAccountName"] == "minio-reader"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_the_crd_check_is_strict_about_unknown_fields():
    obj = inference_service(ServiceSpec(storage_uri=URI))
    obj["spec"]["predictor"]["model"]["storageURI"] = obj["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(AssertionError, match="storageURI"):
        validate_against_crd(obj, ISVC_CRD)


def test_serving_runtime_is_valid_and_runs_the_predictor_cli():
    obj = serving_runtime(image="registry.example/musicops:dev")
    validate_against_crd(obj, RUNTIME_CRD)
    assert obj["metadata"]["name"] == "musicops-predictor"
    assert obj["spec"]["supportedModelFormats"] == [{"name": "musicgen", "autoSelect": True}]
    assert obj["spec"]["protocolVersions"] == ["v1", "v2"]
    (container,) = obj["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "registry.example/musicops:dev"
    assert container["command"] == ["python", "-m", "serving.predictor"]
    assert container["args"] == ["--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080), ("grpc", 8081)]


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        ("minio://mlpipeline/v2/artifacts/run/export/onnx", "s3://mlpipeline/v2/artifacts/run/export/onnx"),
        ("s3://bucket/models/onnx", "s3://bucket/models/onnx"),
        ("gs://bucket/models/onnx", "gs://bucket/models/onnx"),
    ],
)
def test_storage_uri_maps_kfp_artifacts_to_what_kserve_reads(artifact: str, expected: str):
    assert storage_uri(artifact) == expected


def test_a_local_artifact_becomes_file_uri_only_for_a_written_manifest():
    assert storage_uri("/tmp/pipeline/export/onnx", local_ok=True) == "file:///tmp/pipeline/export/onnx"
    service = inference_service(ServiceSpec(storage_uri="file:///tmp/pipeline/export/onnx"))
    api = FakeApi()
    with pytest.raises(DeployError, match="local path, which the cluster cannot read"):
        apply_inference_service(service, api=api)
    assert api.calls == []


@pytest.mark.parametrize("artifact", ["/tmp/pipeline/export/onnx", "file:///tmp/onnx", "ftp://host/onnx"])
def test_storage_uri_refuses_what_kserve_cannot_read_naming_it(artifact: str):
    with pytest.raises(DeployError, match="is not in object storage") as caught:
        storage_uri(artifact)
    assert artifact in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"name": "MusicGen"}, "name 'MusicGen'"),
        ({"name": "1musicgen"}, "name '1musicgen'"),
        ({"name": "m" * 64}, "is not a DNS label"),
        ({"namespace": "music_ops"}, "namespace"),
        ({"memory": "8GB"}, "memory '8GB'"),
        ({"gpus": -1}, "gpus"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas=3, max_replicas=2"),
        ({"min_replicas": 0, "max_replicas": 0}, "max_replicas >= 1"),
        ({"storage_uri": "/home/me/artifacts/onnx"}, "local path"),
        ({"storage_uri": "ftp://host/onnx"}, "no scheme"),
        ({"storage_uri": "bucket/onnx"}, "no scheme"),
    ],
)
def test_check_names_the_field_at_fault(changes: dict, named: str):
    spec = ServiceSpec(**{"storage_uri": URI, **changes})
    with pytest.raises(DeployError, match=re.escape(named)):
        spec.check()
    with pytest.raises(DeployError):
        inference_service(spec)  # the builder checks too


@pytest.mark.parametrize("uri", ["pvc://musicops-models/onnx", "oci://registry/musicgen:1", "https://host/onnx.tar"])
def test_check_accepts_the_schemes_kserve_reads(uri: str):
    ServiceSpec(storage_uri=uri).check()


def test_apply_creates_when_absent():
    api = FakeApi(ApiException(status=404, reason="Not Found"))
    obj = inference_service(ServiceSpec(storage_uri=URI))
    assert apply_inference_service(obj, api=api) == "created"
    (_, get), (action, create) = api.calls
    assert action == "create" and create["body"] is obj
    assert (create["group"], create["version"], create["namespace"], create["plural"]) == (
        "serving.kserve.io",
        "v1beta1",
        "musicops",
        "inferenceservices",
    )
    assert get["name"] == "musicgen"


def test_apply_replaces_when_present_carrying_its_resource_version():
    api = FakeApi({"metadata": {"name": "musicgen", "resourceVersion": "4711"}})
    obj = inference_service(ServiceSpec(storage_uri=URI))
    assert apply_inference_service(obj, api=api) == "replaced"
    action, replace = api.calls[-1]
    assert action == "replace" and replace["name"] == "musicgen"
    assert replace["body"]["metadata"]["resourceVersion"] == "4711"
    assert replace["body"]["spec"] == obj["spec"]
    assert "resourceVersion" not in obj["metadata"]  # the caller's object is left as it was


def test_apply_reports_a_refusal_with_status_and_the_servers_message():
    refusal = ApiException(status=403, reason="Forbidden")
    refusal.body = '{"kind": "Status", "message": "inferenceservices is forbidden: User cannot get\\nmore"}'
    with pytest.raises(DeployError, match=r"HTTP 403 Forbidden: inferenceservices is forbidden: User cannot get$"):
        apply_inference_service(inference_service(ServiceSpec(storage_uri=URI)), api=FakeApi(refusal))


def test_apply_turns_a_refused_connection_into_one_line_naming_the_host():
    pool = urllib3.HTTPSConnectionPool("10.0.0.1", 6443)
    refused = urllib3.exceptions.NewConnectionError(
        pool, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    api = FakeApi(urllib3.exceptions.MaxRetryError(pool, "/apis/serving.kserve.io/v1beta1", refused))
    with pytest.raises(ClusterUnreachable) as caught:
        apply_inference_service(inference_service(ServiceSpec(storage_uri=URI)), api=api)
    message = str(caught.value)
    assert "\n" not in message
    assert "https://10.0.0.1:6443" in message and "Connection refused" in message


@pytest.fixture
def no_cluster(tmp_path, monkeypatch):
    """No in-cluster service account and no kubeconfig anywhere this process would look."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing" / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))


def test_no_cluster_configured_is_one_clear_line(no_cluster):
    with pytest.raises(ClusterUnreachable, match="no in-cluster service account and no kubeconfig") as caught:
        custom_objects_api()
    assert "\n" not in str(caught.value)
    with pytest.raises(ClusterUnreachable):  # the default api of the deploy step goes the same way
        apply_inference_service(inference_service(ServiceSpec(storage_uri=URI)))


def test_a_broken_kubeconfig_is_named(no_cluster, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(ClusterUnreachable, match=f"kubeconfig {kubeconfig} cannot be used"):
        custom_objects_api()


class TestWaitReady:
    PENDING: ClassVar = ("Ready", "False", "RevisionMissing", "Revision musicgen-predictor-1 is not ready\nmore")

    def test_returns_the_status_with_its_url_once_ready(self):
        api = FakeApi(
            {"metadata": {"generation": 1}},  # no status yet
            isvc_status(self.PENDING),
            isvc_status(("PredictorReady", "True", "", ""), ("Ready", "True", "", "")),
        )
        status = wait_ready("musicgen", "musicops", api=api, poll_s=0)
        assert status["url"] == "http://musicgen.musicops.example.com"
        assert len(api.calls) == 3

    def test_a_ready_status_of_the_previous_spec_does_not_count(self):
        stale = isvc_status(("Ready", "True", "", ""), generation=2, observed=1)
        fresh = isvc_status(("Ready", "True", "", ""), generation=2, observed=2)
        api = FakeApi(stale, fresh)
        wait_ready("musicgen", "musicops", api=api, poll_s=0)
        assert len(api.calls) == 2
        with pytest.raises(DeployError, match="previous spec"):
            wait_ready("musicgen", "musicops", api=FakeApi(stale), timeout_s=0, poll_s=0)

    def test_timeout_names_the_last_condition_not_true(self):
        api = FakeApi(isvc_status(("PredictorReady", "True", "", ""), self.PENDING))
        with pytest.raises(DeployError) as caught:
            wait_ready("musicgen", "musicops", api=api, timeout_s=0, poll_s=0)
        assert str(caught.value) == (
            "InferenceService musicops/musicgen not ready after 0 s: Ready is False: RevisionMissing "
            "(Revision musicgen-predictor-1 is not ready)"
        )

    def test_a_missing_service_is_an_error_not_a_wait(self):
        with pytest.raises(DeployError, match="HTTP 404"):
            wait_ready("musicgen", "musicops", api=FakeApi(ApiException(status=404, reason="Not Found")), poll_s=0)
