"""Distributed training on a cluster: the project's DDP trainer (components/train.py) under torchrun on N nodes.

    spec = JobSpec(name="musicgen-train", workdir="runs/2026-11-23", nodes=2, gpus_per_node=1)
    run_job(JOB_KINDS["trainjob"](spec))   # or "pytorchjob"; waits, logging each state, and returns the final one

Two ways to run it, for the two Kubeflow training stacks a cluster may have:

- `trainjob`: Kubeflow Trainer v2's TrainJob (trainer.kubeflow.org/v1alpha1) on the `torch-distributed`
  ClusterTrainingRuntime. Its torch ML policy gives every node PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
  PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads as the defaults of its own options, so the command is
  plain `torchrun -m components.train ...`. A TrainJob cannot set a security context (its podSpecOverrides have
  none), so `training_runtime()` is the same runtime with the project's hardened pod (non-root, read-only root
  filesystem): `musicops-torch-distributed`, which k8s/training/trainjob installs and its TrainJob names.
- `pytorchjob`: Training Operator v1's PyTorchJob (kubeflow.org/v1), legacy but still common: one Master and
  nodes-1 Workers, each given MASTER_ADDR, MASTER_PORT and RANK (the node's rank); torchrun gets them explicitly.

Data travels on a shared PersistentVolumeClaim (ReadWriteMany when nodes sit on different machines): the pipeline
step copies tokens/, codec/ and params.yaml into `<mount_path>/<workdir>`, the job writes train/ and model/ beside
them, and the step copies the model back. TrainingJobError is raised for a spec the cluster would refuse (`check`)
and for a job that fails or outlives its timeout, in one line with the job's own reason.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
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

TRAIN_MODULE = "components.train"
# The replicated job and container of Kubeflow Trainer's torch-distributed runtime (v2.0 on; its pre-release
# manifests called them trainer-node and trainer).
TRAINER_JOB = TRAINER_CONTAINER = "node"
PYTORCHJOB_CONTAINER, PYTORCHJOB_PORT = "pytorch", 23456  # the names the v1 operator looks for
HARDENED_RUNTIME = "musicops-torch-distributed"  # training_runtime(): torch-distributed with the hardened pod
# plural, and the condition type that means success, per kind; both stacks call failure "Failed".
_RESOURCES = {"TrainJob": ("trainjobs", "Complete"), "PyTorchJob": ("pytorchjobs", "Succeeded")}
FAILED = "Failed"


class TrainingJobError(RuntimeError):
    """A job spec the cluster would refuse, or a job that failed or ran out of time; one line, naming the job."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One distributed training run: where it runs, on how much, and its folder on the shared volume."""

    name: str
    namespace: str = NAMESPACE
    image: str = IMAGE
    nodes: int = 2
    procs_per_node: int = 0  # torchrun processes per node; 0: one per GPU with GPUs, else 1
    gpus_per_node: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    workspace_pvc: str = "musicops-workspace"
    mount_path: str = "/workspace"
    workdir: str  # the run's folder, relative to mount_path
    node_selector: dict[str, str] = field(default_factory=dict)
    runtime: str = "torch-distributed"  # TrainJob only: the ClusterTrainingRuntime

    @property
    def processes(self) -> int:
        return self.procs_per_node or max(1, self.gpus_per_node)

    @property
    def root(self) -> PurePosixPath:
        """The run's folder as the job's containers see it."""
        return PurePosixPath(self.mount_path) / self.workdir

    def check(self) -> None:
        problems = [
            name_problem("name", self.name),
            name_problem("namespace", self.namespace, letter_first=False),
            name_problem("workspace_pvc", self.workspace_pvc, letter_first=False),
            name_problem("runtime", self.runtime),
            quantity_problem("cpu", self.cpu),
            quantity_problem("memory", self.memory),
        ]
        if problem := next((p for p in problems if p), None):
            raise TrainingJobError(problem)
        if self.nodes < 1 or self.procs_per_node < 0 or self.gpus_per_node < 0:
            raise TrainingJobError(
                f"nodes must be 1 or more and procs_per_node, gpus_per_node 0 or more, got nodes={self.nodes}, "
                f"procs_per_node={self.procs_per_node}, gpus_per_node={self.gpus_per_node}"
            )
        if self.gpus_per_node and self.processes > self.gpus_per_node:
            # components/train.py puts each process on its own GPU (cuda:LOCAL_RANK).
            raise TrainingJobError(
                f"procs_per_node={self.procs_per_node} exceeds gpus_per_node={self.gpus_per_node}: one process per GPU"
            )
        if not self.mount_path.startswith("/"):
            raise TrainingJobError(f"mount_path must be absolute, got {self.mount_path!r}")
        workdir = PurePosixPath(self.workdir)
        if not self.workdir or workdir.is_absolute() or ".." in workdir.parts or workdir == PurePosixPath("."):
            raise TrainingJobError(
                f"workdir must be a folder inside mount_path (relative, no '..'), got {self.workdir!r}"
            )


def train_args(spec: JobSpec) -> list[str]:
    """components.train's arguments: inputs and outputs in the run's folder on the shared volume."""
    root = spec.root
    return [
        "--params",
        f"{root}/params.yaml",
        "--tokens",
        f"{root}/tokens",
        "--codec",
        f"{root}/codec",
        "--out",
        f"{root}/train",
        "--model",
        f"{root}/model",
    ]


def _metadata(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": {"app.kubernetes.io/name": "musicgen-train", "app.kubernetes.io/component": "training", **LABELS},
    }


def _volumes(spec: JobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shared workspace, and with GPUs a RAM-backed /dev/shm: NCCL passes data between a node's processes
    through it, and container runtimes cap it at 64 MiB."""
    volumes = [{"name": "workspace", "persistentVolumeClaim": {"claimName": spec.workspace_pvc}}]
    mounts = [{"name": "workspace", "mountPath": spec.mount_path}]
    if spec.gpus_per_node:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def trainjob(spec: JobSpec) -> dict[str, Any]:
    """A Kubeflow Trainer v2 TrainJob on the torch-distributed runtime (rendezvous from its PET_* variables)."""
    spec.check()
    volumes, mounts = _volumes(spec)
    # The runtime's pod spec is overridden through podSpecOverrides (renamed podTemplateOverrides after v2.0).
    override: dict[str, Any] = {
        "targetJobs": [{"name": TRAINER_JOB}],
        "containers": [{"name": TRAINER_CONTAINER, "volumeMounts": mounts}],
        "volumes": volumes,
    }
    if spec.node_selector:
        override["nodeSelector"] = dict(spec.node_selector)
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _metadata(spec),
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": spec.runtime},
            "trainer": {
                "image": spec.image,
                "command": ["torchrun", "-m", TRAIN_MODULE],
                "args": train_args(spec),
                "numNodes": spec.nodes,
                "numProcPerNode": spec.processes,
                "resourcesPerNode": resources(spec.cpu, spec.memory, spec.gpus_per_node),
            },
            "podSpecOverrides": [override],
        },
    }


def pytorchjob(spec: JobSpec) -> dict[str, Any]:
    """A Training Operator v1 PyTorchJob: a Master and nodes-1 Workers, torchrun told the rendezvous explicitly."""
    spec.check()
    volumes, mounts = _volumes(spec)
    # $(VAR) is expanded by the kubelet from the variables the operator adds to the container: RANK is the
    # node's rank (torchrun sets each process's own RANK and WORLD_SIZE), MASTER_ADDR the Master's service.
    command = [
        "torchrun",
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.processes}",
        "--node-rank=$(RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        TRAIN_MODULE,
    ]
    scratch, scratch_mounts = scratch_volumes()
    pod: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": PYTORCHJOB_CONTAINER,
                "image": spec.image,
                "command": command,
                "args": train_args(spec),
                "ports": [{"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT, "protocol": "TCP"}],
                "resources": resources(spec.cpu, spec.memory, spec.gpus_per_node),
                "securityContext": container_security_context(),
                "volumeMounts": mounts + scratch_mounts,
            }
        ],
        "volumes": volumes + scratch,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)

    def replicas(count: int) -> dict[str, Any]:
        # Never: a restarted pod cannot rejoin a static torchrun group mid-run; fail fast, the pipeline retries.
        # A copy each: YAML would otherwise write the shared pod spec once and an alias to it.
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": copy.deepcopy(pod)}}

    replica_specs = {"Master": replicas(1)}
    if spec.nodes > 1:
        replica_specs["Worker"] = replicas(spec.nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(spec),
        "spec": {"nprocPerNode": str(spec.processes), "pytorchReplicaSpecs": replica_specs},
    }


JOB_KINDS = {"trainjob": trainjob, "pytorchjob": pytorchjob}


def training_runtime(image: str = IMAGE, name: str = HARDENED_RUNTIME) -> dict[str, Any]:
    """Kubeflow Trainer's torch-distributed ClusterTrainingRuntime (same ML policy, job and container names) with the
    project's image and hardened pod: what a TrainJob cannot add through its podSpecOverrides. The TrainJob's own
    trainer image, command, resources and volumes are merged into this template by the Trainer controller."""
    volumes, mounts = scratch_volumes()
    pod = {
        "serviceAccountName": "musicops-trainer",  # k8s/base/rbac.yaml: no API access
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "image": image,
                "securityContext": container_security_context(),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    node_job = {
        "name": TRAINER_JOB,
        "template": {
            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
            "spec": {"template": {"spec": pod}},
        },
    }
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {
            "name": name,
            "labels": {"trainer.kubeflow.org/framework": "torch", "app.kubernetes.io/name": name, **LABELS},
        },
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "template": {"spec": {"replicatedJobs": [node_job]}},
        },
    }


def _state(status: dict[str, Any], success: str) -> tuple[dict[str, Any] | None, bool]:
    """The job's current condition (a final one first, else the latest True one) and whether it is final."""
    true = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    final = next((c for c in true if c.get("type") in (success, FAILED)), None)
    if final:
        return final, True
    return (true[-1] if true else None), False


def run_job(
    obj: dict[str, Any], api: Any = None, timeout_s: float = 86400, poll_s: float = 15, log: Any = print
) -> str:
    """Create the job and wait for it, logging each state it enters; returns the success condition's type.

    TrainingJobError when it fails (with its reason and message), when the cluster refuses it, or when it is
    still running after `timeout_s` (it is left running: delete it with kubectl). ClusterUnreachable when no
    API server answers.
    """
    from kubernetes.client.exceptions import ApiException

    kind = obj.get("kind", "")
    if kind not in _RESOURCES:
        raise TrainingJobError(f"run_job runs {' or '.join(_RESOURCES)}, not {kind or 'an object without a kind'}")
    plural, success = _RESOURCES[kind]
    group, version = obj["apiVersion"].split("/")
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    where = {"group": group, "version": version, "namespace": namespace, "plural": plural}
    job = f"{kind} {namespace}/{name}"
    api = api or custom_objects_api()
    try:
        with reaching(api):
            api.create_namespaced_custom_object(**where, body=obj)
            log(f"{job}: submitted")
            deadline, seen = time.monotonic() + timeout_s, None
            while True:
                current = api.get_namespaced_custom_object(**where, name=name)
                condition, final = _state(current.get("status") or {}, success)
                if condition and condition.get("type") != seen:
                    seen = condition.get("type")
                    log(f"{job}: {seen}" + (f" ({condition['reason']})" if condition.get("reason") else ""))
                if final and seen == FAILED:
                    lines = (condition.get("message") or "").strip().splitlines()
                    why = f"{condition.get('reason') or 'no reason given'}" + (f": {lines[0]}" if lines else "")
                    raise TrainingJobError(f"{job} failed: {why}")
                if final:
                    return seen
                if time.monotonic() >= deadline:
                    raise TrainingJobError(
                        f"{job} still {seen or 'pending'} after {timeout_s:g} s; left running "
                        f"(kubectl delete {kind.lower()} -n {namespace} {name})"
                    )
                time.sleep(poll_s)
    except ApiException as error:
        raise TrainingJobError(f"{job}: {api_error(error)}") from None


def example_manifests() -> dict[str, dict[str, Any]]:
    """The training manifests committed under k8s/training (relative path -> object): 2 nodes with a GPU each, the
    TrainJob on the hardened runtime beside it."""
    spec = JobSpec(name="musicgen-train", workdir="runs/manual", nodes=2, gpus_per_node=1)
    return {
        "training/trainjob/runtime.yaml": training_runtime(),
        "training/trainjob/trainjob.yaml": trainjob(replace(spec, runtime=HARDENED_RUNTIME)),
        "training/pytorchjob/pytorchjob.yaml": pytorchjob(spec),
    }
