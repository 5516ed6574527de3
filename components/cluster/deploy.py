"""The pipeline's deploy step: a KServe InferenceService serving an exported model, created or replaced, then awaited.

    spec = ServiceSpec(storage_uri=storage_uri(onnx.uri))   # the export's Kubeflow artifact, read by KServe
    apply_inference_service(inference_service(spec))        # "created" or "replaced"
    wait_ready(spec.name, spec.namespace)                   # its status, with the URL clients call

The InferenceService names the `musicops-predictor` ServingRuntime (`serving_runtime()`, part of k8s/base, applied
once per namespace): the project image running the KServe predictor of serving/. KServe's storage initializer copies
`storageUri` into /mnt/models before the predictor starts.

By default both run in KServe's Standard deployment mode (a Deployment, a Service `<name>-predictor` and a
HorizontalPodAutoscaler on `scale_metric`), and a new model replaces the old by the Deployment's rolling update, with
no replica taken away before its successor is ready. `mode="Serverless"` (Knative) is for canary rollouts
(`canary_percent`, driven by components/cluster/rollout.py): Knative allows one container port (no V2 gRPC, see
k8s/overlays/canary) and restricts volume types. The runtime carries what is true of the image everywhere (command,
ports, probes, a read-only root filesystem with writable /tmp and HOME); the InferenceService what differs per
deployment (size, replicas, scaling, rollout).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from components.cluster.kube import (
    IMAGE,
    LABELS,
    NAMESPACE,
    api_error,
    container_security_context,
    custom_objects_api,
    name_problem,
    pod_security_context,
    quantity_problem,
    reaching,
    resources,
    scratch_volumes,
)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RUNTIME_NAME, MODEL_FORMAT = "musicops-predictor", "musicgen"
STORAGE_SCHEMES = ("s3", "gs", "pvc", "hdfs", "http", "https", "oci")
# file:// names a model on the machine the manifest was made on (a kfp.local run's export): fine in a written
# manifest, refused by apply_inference_service, since no cluster can read it.
LOCAL_SCHEME = "file"
HTTP_PORT, GRPC_PORT = 8080, 8081
READY_TIMEOUT_S, POLL_S = 600.0, 5.0  # the predictor loads its model before it is ready: minutes, not seconds
MODEL_NAME = "musicgen"  # the name in the predictor's V1/V2 routes (serving.predictor's --model_name default)
MODE_ANNOTATION, AUTOSCALER_ANNOTATION = "serving.kserve.io/deploymentMode", "serving.kserve.io/autoscalerClass"
STANDARD, SERVERLESS = "Standard", "Serverless"  # KServe's deployment modes: raw Deployment + HPA, or Knative
ANNOTATIONS = {
    MODE_ANNOTATION: STANDARD,
    # The autoscaler class must be named for KServe (0.16 on) to validate a cpu/memory scaleMetric (without it the
    # webhook checks them as Knative metrics and refuses them). Serverless mode leaves it out: Knative's own KPA.
    AUTOSCALER_ANNOTATION: "hpa",
    "serving.kserve.io/enable-prometheus-scraping": "true",  # prometheus.io/* on the pods: /metrics on the HTTP port
}
SCALE_METRICS = ("cpu", "memory")  # what the HPA of Standard mode scales on
# Standard mode's rollout: the Deployment starts one extra pod and stops an old one only once the new one is ready,
# so capacity never drops during a model change (the cluster needs room for one more predictor pod meanwhile).
ROLLING_UPDATE = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


class DeployError(ValueError):
    """An InferenceService that cannot be built, applied or made ready; the message names the field or condition."""


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """What the InferenceService serves and with what; `check()` refuses what KServe or the API server would."""

    name: str = "musicgen"
    namespace: str = NAMESPACE
    storage_uri: str  # where KServe's storage initializer fetches the model: s3://, gs://, pvc://, ...
    runtime: str = RUNTIME_NAME
    model_format: str = MODEL_FORMAT
    protocol: str = "v2"  # the Open Inference Protocol; the predictor also serves v1 (its streaming route)
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    min_replicas: int = 1
    max_replicas: int = 4
    # Standard mode: the HPA adds replicas when average CPU use passes 70% of the request: generation is CPU-bound
    # on CPU nodes, and on GPU nodes the host side (sampling, codec, audio encoding) still tracks the load.
    scale_metric: str = "cpu"
    scale_target: int = 70
    # Requests one replica takes at once: the predictor's --max_batch (8), all generated in one engine batch.
    # Enforced by Knative's queue-proxy in Knative mode; in Standard mode the predictor's own queue (503 past
    # --max_queue) bounds it and this documents the intent.
    container_concurrency: int = 8
    service_account: str | None = None  # one carrying the storage credentials (see `storage_uri`)
    node_selector: dict[str, str] = field(default_factory=dict)
    # Standard (a rolling update of a Deployment) or Serverless (Knative revisions: the only mode with canaries).
    mode: str = STANDARD
    # Serverless only: the share of traffic (0-100) the newest revision gets while the previous one keeps the rest;
    # None leaves the field out (the newest ready revision takes all traffic).
    canary_percent: int | None = None

    def check(self) -> None:
        problems = [
            name_problem("name", self.name),
            name_problem("namespace", self.namespace, letter_first=False),
            name_problem("runtime", self.runtime),
            quantity_problem("cpu", self.cpu),
            quantity_problem("memory", self.memory),
        ]
        if problem := next((p for p in problems if p), None):
            raise DeployError(problem)
        if self.gpus < 0:
            raise DeployError(f"gpus must be 0 or more, got {self.gpus}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise DeployError(
                f"replicas must satisfy 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got min_replicas={self.min_replicas}, max_replicas={self.max_replicas}"
            )
        if self.scale_metric not in SCALE_METRICS or not 1 <= self.scale_target <= 100:
            raise DeployError(
                f"scale_metric must be one of {SCALE_METRICS} and scale_target a percentage (1-100), "
                f"got {self.scale_metric!r} and {self.scale_target}"
            )
        if self.mode not in (STANDARD, SERVERLESS):
            raise DeployError(f"mode must be {STANDARD} or {SERVERLESS}, got {self.mode!r}")
        if self.canary_percent is not None and (self.mode != SERVERLESS or not 0 <= self.canary_percent <= 100):
            raise DeployError(
                f"canary_percent must be a percentage (0-100) in {SERVERLESS} mode (KServe splits traffic between "
                f"revisions only there), got {self.canary_percent} in {self.mode} mode"
            )
        if self.container_concurrency < 0:
            raise DeployError(f"container_concurrency must be 0 (no limit) or more, got {self.container_concurrency}")
        if self.storage_uri.startswith("/"):
            raise DeployError(_local_path(self.storage_uri))
        scheme = self.storage_uri.split("://", 1)[0] if "://" in self.storage_uri else ""
        if scheme not in (*STORAGE_SCHEMES, LOCAL_SCHEME):
            raise DeployError(
                f"storage_uri {self.storage_uri!r} has no scheme KServe's storage initializer reads "
                f"({', '.join(s + '://' for s in STORAGE_SCHEMES)})"
            )


def _local_path(uri: str) -> str:
    return (
        f"storage_uri {uri!r} is a local path, which the cluster cannot read: upload the "
        f"model to object storage or a volume ({', '.join(s + '://' for s in STORAGE_SCHEMES)})"
    )


def storage_uri(artifact_uri: str, local_ok: bool = False) -> str:
    """The URI KServe's storage initializer reads for a Kubeflow Pipelines artifact.

    KFP's default artifact store is its in-cluster MinIO (`minio://mlpipeline/v2/artifacts/...`), which speaks S3:
    the same bucket and key as `s3://`. The storage initializer then needs the MinIO endpoint and credentials from
    the InferenceService's service account: annotate it with `serving.kserve.io/s3-endpoint`
    (e.g. `minio-service.kubeflow:9000`) and `serving.kserve.io/s3-usehttps: "0"`, and attach a secret holding
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (KServe's S3 secret convention). `s3://` and `gs://` pass unchanged.
    With `local_ok`, a local path (a kfp.local run's artifact) becomes `file://`, for a manifest that is written,
    not applied.
    """
    if local_ok and artifact_uri.startswith("/"):
        return f"{LOCAL_SCHEME}://{artifact_uri}"
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri.removeprefix("minio://")
    if artifact_uri.startswith(("s3://", "gs://")):
        return artifact_uri
    raise DeployError(
        f"artifact {artifact_uri!r} is not in object storage KServe can read (minio://, s3:// or gs://); "
        "a pipeline run here (kfp.local) keeps artifacts on this machine"
    )


def inference_service(spec: ServiceSpec) -> dict[str, Any]:
    """The InferenceService (serving.kserve.io/v1beta1) for `spec`, checked first."""
    spec.check()
    annotations = dict(ANNOTATIONS)
    predictor: dict[str, Any] = {"minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas}
    if spec.mode == STANDARD:
        predictor |= {"scaleMetric": spec.scale_metric, "scaleTarget": spec.scale_target}
        predictor["deploymentStrategy"] = copy.deepcopy(ROLLING_UPDATE)
    else:
        # Knative's autoscaler (KPA) scales on concurrency and refuses cpu/memory and the hpa class; with no target
        # given it aims at 70% of containerConcurrency per pod. Knative rolls out by revisions, not a Deployment.
        annotations[MODE_ANNOTATION] = SERVERLESS
        del annotations[AUTOSCALER_ANNOTATION]
        if spec.canary_percent is not None:
            predictor["canaryTrafficPercent"] = spec.canary_percent
    predictor |= {
        "containerConcurrency": spec.container_concurrency,
        "securityContext": pod_security_context(),
        "model": {
            "modelFormat": {"name": spec.model_format},
            "runtime": spec.runtime,
            "storageUri": spec.storage_uri,
            "protocolVersion": spec.protocol,
            "resources": resources(spec.cpu, spec.memory, spec.gpus),
        },
    }
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/name": MODEL_FORMAT, **LABELS},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def serving_runtime(image: str = IMAGE, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The ServingRuntime (serving.kserve.io/v1alpha1) `musicops-predictor`: the project image serving musicgen models.

    KServe picks it for any InferenceService in `namespace` whose modelFormat is musicgen (autoSelect), and merges
    the InferenceService's model fields over this container key by key (its resources over the defaults here). The
    predictor loads the model before it listens, so
    the startup probe gives the load up to 5 minutes, and readiness asks KServe's V2 route whether the model is
    ready; the pod's security context comes from the InferenceService (a runtime has no pod-level one).
    """
    volumes, mounts = scratch_volumes()
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {
            "name": RUNTIME_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": RUNTIME_NAME, **LABELS},
        },
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": True}],
            "protocolVersions": ["v1", "v2"],
            "containers": [
                {
                    "name": "kserve-container",  # the name KServe merges the InferenceService's model spec into
                    "image": image,
                    # The KServe predictor of serving/ implements exactly this command line.
                    "command": ["python", "-m", "serving.predictor"],
                    "args": ["--model_dir=/mnt/models", f"--http_port={HTTP_PORT}", f"--grpc_port={GRPC_PORT}"],
                    # KServe's default (Standard) deployment mode exposes both ports, gRPC by its name; Knative
                    # mode accepts one container port: drop the grpc entry there (V2 gRPC is then unreachable).
                    "ports": [
                        {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"},
                        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    ],
                    "resources": resources("1", "4Gi"),
                    "startupProbe": _probe("/v2/health/live", period_s=5, failures=60),
                    "readinessProbe": _probe(f"/v2/models/{MODEL_NAME}/ready", period_s=10, failures=3),
                    "livenessProbe": _probe("/v2/health/live", period_s=20, failures=3),
                    "securityContext": container_security_context(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    # A generous timeout: a busy predictor answers health checks from the same event loop that hands out audio.
    return {
        "httpGet": {"path": path, "port": HTTP_PORT},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def apply_inference_service(obj: dict[str, Any], api: Any = None) -> str:
    """Create the InferenceService, or replace it when one of that name exists; returns "created" or "replaced"."""
    from kubernetes.client.exceptions import ApiException

    uri = obj["spec"]["predictor"]["model"]["storageUri"]
    if uri.startswith(f"{LOCAL_SCHEME}://"):
        raise DeployError(_local_path(uri))
    api = api or custom_objects_api()
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL}
    try:
        with reaching(api):
            try:
                existing = api.get_namespaced_custom_object(**where, name=name)
            except ApiException as error:
                if error.status != 404:
                    raise
                api.create_namespaced_custom_object(**where, body=obj)
                return "created"
            body = copy.deepcopy(obj)
            # A replace must name the version it replaces, so a concurrent change is refused instead of lost.
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            api.replace_namespaced_custom_object(**where, name=name, body=body)
            return "replaced"
    except ApiException as error:
        raise DeployError(f"applying InferenceService {namespace}/{name} failed: {api_error(error)}") from None


def _conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return status.get("conditions") or []


def _why(status: dict[str, Any], ready: bool) -> str:
    """What keeps the service from being ready: the last condition not True, in one line."""
    pending = [c for c in _conditions(status) if c.get("status") != "True"]
    if pending:
        last = pending[-1]
        why = f"{last.get('type')} is {last.get('status')}: {last.get('reason') or 'no reason given'}"
        lines = (last.get("message") or "").strip().splitlines()
        return f"{why} ({lines[0]})" if lines else why
    if ready:
        return "Ready describes the previous spec; the controller has not observed the latest one"
    return "no conditions reported (is KServe's controller running?)"


def wait_ready(
    name: str, namespace: str = NAMESPACE, api: Any = None, timeout_s: float = READY_TIMEOUT_S, poll_s: float = POLL_S
) -> dict[str, Any]:
    """Poll the InferenceService until its Ready condition is True for its current spec; returns its status
    (`status["url"]` is the address clients call). DeployError on timeout names the last condition not yet True."""
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": name}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with reaching(api):
                current = api.get_namespaced_custom_object(**where)
        except ApiException as error:
            raise DeployError(f"reading InferenceService {namespace}/{name} failed: {api_error(error)}") from None
        status = current.get("status") or {}
        # Right after a replace the status still describes the previous spec until the controller catches up.
        generation = current.get("metadata", {}).get("generation")
        current_spec = generation is None or status.get("observedGeneration", generation) >= generation
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in _conditions(status))
        if ready and current_spec:
            return status
        if time.monotonic() >= deadline:
            raise DeployError(
                f"InferenceService {namespace}/{name} not ready after {timeout_s:g} s: {_why(status, ready)}"
            )
        time.sleep(poll_s)


def example_manifests() -> dict[str, dict[str, Any]]:
    """The serving manifests committed under k8s/base (relative path -> object): the overlays deploy them."""
    return {
        "base/serving/servingruntime.yaml": serving_runtime(),
        "base/serving/inferenceservice.yaml": inference_service(
            # musicops-predictor (k8s/base/rbac.yaml) carries the S3 endpoint and the musicops-s3 secret.
            ServiceSpec(storage_uri="s3://musicops/models/musicgen/onnx", service_account="musicops-predictor")
        ),
    }
