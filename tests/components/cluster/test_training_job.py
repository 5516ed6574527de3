"""Distributed training jobs: TrainJob and PyTorchJob valid against their CRDs, commands torchrun and the trainer's
CLI accept, and run_job's waiting against a scripted stand-in for the Kubernetes API (no cluster is contacted)."""

from __future__ import annotations

import re

import pytest
from kubernetes.client.exceptions import ApiException

from components.cluster.kube import GPU, ClusterUnreachable
from components.cluster.training_job import (
    JOB_KINDS,
    JobSpec,
    TrainingJobError,
    pytorchjob,
    run_job,
    train_args,
    trainjob,
)
from tests.support.crds import validate_against_crd
from tests.support.fake_kube import FakeApi

pytestmark = pytest.mark.unit

TRAINJOB_CRD = "kubeflow-trainer-trainer.kubeflow.org_trainjobs.yaml"
PYTORCHJOB_CRD = "kubeflow-training-operator-v1.9.0-kubeflow.org_pytorchjobs.yaml"
SPEC = JobSpec(name="musicops-train-1a2b3c4d", workdir="runs/1a2b3c4d")
GPU_SPEC = JobSpec(
    name="musicops-train-gpu", workdir="runs/gpu", nodes=3, gpus_per_node=2, node_selector={"pool": "a100"}
)
ROOT = "/workspace/runs/1a2b3c4d"


def workspace(pod_volumes: list[dict], mounts: list[dict]) -> tuple[dict, dict]:
    volume = next(v for v in pod_volumes if v["name"] == "workspace")
    mount = next(m for m in mounts if m["name"] == "workspace")
    return volume, mount


def test_train_args_put_every_input_and_output_in_the_run_folder():
    assert train_args(SPEC) == [
        "--params",
        f"{ROOT}/params.yaml",
        "--tokens",
        f"{ROOT}/tokens",
        "--codec",
        f"{ROOT}/codec",
        "--out",
        f"{ROOT}/train",
        "--model",
        f"{ROOT}/model",
    ]


def test_train_args_are_options_of_the_trainer_cli():
    import typer

    from components.train import app

    context = typer.main.get_command(app).make_context("train", train_args(SPEC))
    assert str(context.params["tokens"]) == f"{ROOT}/tokens" and str(context.params["model"]) == f"{ROOT}/model"


def test_trainjob_is_valid_on_the_torch_distributed_runtime():
    obj = trainjob(SPEC)
    validate_against_crd(obj, TRAINJOB_CRD)
    assert obj["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = obj["spec"]["trainer"]
    assert trainer["image"] == "ghcr.io/musicops/musicops:0.1.0"
    assert trainer["command"] == ["torchrun", "-m", "components.train"]
    assert trainer["args"] == train_args(SPEC)
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert GPU not in trainer["resourcesPerNode"]["limits"]
    (override,) = obj["spec"]["podSpecOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    (container,) = override["containers"]
    volume, mount = workspace(override["volumes"], container["volumeMounts"])
    assert volume["persistentVolumeClaim"] == {"claimName": "musicops-workspace"}
    assert mount["mountPath"] == "/workspace"
    assert "nodeSelector" not in override
    assert [v["name"] for v in override["volumes"]] == ["workspace"]  # no /dev/shm volume without GPUs


def test_trainjob_with_gpus_requests_them_and_runs_one_process_per_gpu():
    obj = trainjob(GPU_SPEC)
    validate_against_crd(obj, TRAINJOB_CRD)
    trainer = obj["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 2)
    assert trainer["resourcesPerNode"]["requests"][GPU] == trainer["resourcesPerNode"]["limits"][GPU] == 2
    (override,) = obj["spec"]["podSpecOverrides"]
    assert override["nodeSelector"] == {"pool": "a100"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in override["containers"][0]["volumeMounts"]


def test_pytorchjob_is_valid_with_a_master_and_workers():
    obj = pytorchjob(GPU_SPEC)
    validate_against_crd(obj, PYTORCHJOB_CRD)
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert obj["spec"]["nprocPerNode"] == "2"
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"  # the operator injects its variables into this container only
        assert container["args"] == train_args(GPU_SPEC)
        assert container["resources"]["limits"][GPU] == 2
        volume, mount = workspace(pod["volumes"], container["volumeMounts"])
        assert volume["persistentVolumeClaim"]["claimName"] == "musicops-workspace"
        assert mount["mountPath"] == "/workspace"
        assert pod["nodeSelector"] == {"pool": "a100"}
    assert replicas["Master"]["template"] is not replicas["Worker"]["template"]


def test_pytorchjob_on_one_node_has_no_workers_and_no_gpu():
    obj = pytorchjob(JobSpec(name="single", workdir="runs/one", nodes=1))
    validate_against_crd(obj, PYTORCHJOB_CRD)
    assert list(obj["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    container = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert GPU not in container["resources"]["requests"]


def test_pytorchjob_command_is_a_torchrun_rendezvous_from_the_operators_variables():
    from torch.distributed.run import get_args_parser

    (container,) = pytorchjob(GPU_SPEC)["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    # The kubelet expands $(VAR) from the variables the operator sets; a Worker's RANK is its node rank.
    values = {"$(RANK)": "2", "$(MASTER_ADDR)": "musicops-train-gpu-master-0", "$(MASTER_PORT)": "23456"}
    argv = []
    for part in container["command"]:
        for variable, value in values.items():
            part = part.replace(variable, value)
        argv.append(part)
    assert argv[0] == "torchrun"
    args = get_args_parser().parse_args(argv[1:] + container["args"])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("3", "2", 2)
    assert (args.master_addr, args.master_port) == ("musicops-train-gpu-master-0", 23456)
    assert args.module and args.training_script == "components.train"
    assert args.training_script_args == train_args(GPU_SPEC)


def test_trainjob_command_takes_its_rendezvous_from_the_runtimes_pet_variables(monkeypatch):
    from torch.distributed.run import get_args_parser

    trainer = trainjob(GPU_SPEC)["spec"]["trainer"]
    # What the torch ML policy sets on every node (PET_NODE_RANK from the Job's completion index).
    env = {
        "PET_NNODES": str(trainer["numNodes"]),
        "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "musicops-train-gpu-node-0-0.musicops-train-gpu",
        "PET_MASTER_PORT": "29400",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = get_args_parser().parse_args(trainer["command"][1:] + trainer["args"])  # torchrun reads PET_* now
    assert (args.nnodes, args.nproc_per_node, int(args.node_rank)) == ("3", "2", 1)
    assert args.master_addr == "musicops-train-gpu-node-0-0.musicops-train-gpu"
    assert args.module and args.training_script == "components.train"
    assert args.training_script_args == train_args(GPU_SPEC)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"name": "Train_1"}, "name 'Train_1'"),
        ({"workdir": "/workspace/runs/x"}, "workdir"),
        ({"workdir": "runs/../../etc"}, "workdir"),
        ({"workdir": ""}, "workdir"),
        ({"mount_path": "workspace"}, "mount_path"),
        ({"nodes": 0}, "nodes=0"),
        ({"gpus_per_node": 1, "procs_per_node": 2}, "procs_per_node=2 exceeds gpus_per_node=1"),
        ({"memory": "16GB"}, "memory '16GB'"),
        ({"workspace_pvc": "Workspace"}, "workspace_pvc"),
    ],
)
def test_check_names_the_field_at_fault(changes: dict, named: str):
    spec = JobSpec(**{"name": "musicops-train", "workdir": "runs/a", **changes})
    with pytest.raises(TrainingJobError, match=re.escape(named)):
        spec.check()
    for build in JOB_KINDS.values():
        with pytest.raises(TrainingJobError):
            build(spec)


def job_status(*conditions: tuple[str, str, str]) -> dict:
    return {
        "status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]}
    }


def test_run_job_waits_for_a_trainjob_to_complete_logging_each_state():
    created = ("Created", "JobsCreationSucceeded", "")
    api = FakeApi({}, job_status(created), job_status(created, ("Complete", "JobsCompleted", "done")))
    lines: list[str] = []
    obj = trainjob(SPEC)
    assert run_job(obj, api=api, poll_s=0, log=lines.append) == "Complete"
    action, create = api.calls[0]
    assert action == "create" and create["body"] is obj
    assert (create["group"], create["version"], create["plural"]) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
    assert lines == [
        "TrainJob musicops/musicops-train-1a2b3c4d: submitted",
        "TrainJob musicops/musicops-train-1a2b3c4d: Created (JobsCreationSucceeded)",
        "TrainJob musicops/musicops-train-1a2b3c4d: Complete (JobsCompleted)",
    ]


def test_run_job_waits_for_a_pytorchjob_to_succeed():
    created, running = ("Created", "PyTorchJobCreated", ""), ("Running", "PyTorchJobRunning", "")
    api = FakeApi(job_status(created), job_status(created, running), job_status(created, ("Succeeded", "Done", "")))
    lines: list[str] = []
    assert run_job(pytorchjob(SPEC), api=api, poll_s=0, log=lines.append) == "Succeeded"
    assert api.calls[0][1]["plural"] == "pytorchjobs"
    assert [line.split(": ", 1)[1] for line in lines] == [
        "submitted",
        "Created (PyTorchJobCreated)",
        "Running (PyTorchJobRunning)",
        "Succeeded (Done)",
    ]


def test_run_job_failure_is_one_line_with_the_jobs_reason():
    message = "PyTorchJob musicops-train is failed because 1 Worker replica(s) failed.\nsee the pod logs"
    api = FakeApi(job_status(("Created", "PyTorchJobCreated", ""), ("Failed", "PyTorchJobFailed", message)))
    with pytest.raises(TrainingJobError) as caught:
        run_job(pytorchjob(SPEC), api=api, poll_s=0, log=lambda _: None)
    assert str(caught.value) == (
        "PyTorchJob musicops/musicops-train-1a2b3c4d failed: PyTorchJobFailed: "
        "PyTorchJob musicops-train is failed because 1 Worker replica(s) failed."
    )


def test_run_job_gives_up_after_the_timeout_naming_the_state():
    api = FakeApi(job_status(("Created", "JobsCreationSucceeded", "")))
    with pytest.raises(TrainingJobError, match="still Created after 0 s; left running"):
        run_job(trainjob(SPEC), api=api, timeout_s=0, poll_s=0, log=lambda _: None)


def test_run_job_reports_a_refused_create():
    class Conflict(FakeApi):
        def create_namespaced_custom_object(self, **where):
            error = ApiException(status=409, reason="Conflict")
            error.body = '{"message": "trainjobs.trainer.kubeflow.org \\"musicops-train-1a2b3c4d\\" already exists"}'
            raise error

    with pytest.raises(TrainingJobError, match=r"HTTP 409 Conflict: .* already exists"):
        run_job(trainjob(SPEC), api=Conflict({}), poll_s=0, log=lambda _: None)


def test_run_job_without_a_cluster_is_cluster_unreachable(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterUnreachable, match="no kubeconfig"):
        run_job(trainjob(SPEC), poll_s=0, log=lambda _: None)


def test_run_job_refuses_kinds_it_cannot_wait_for():
    with pytest.raises(TrainingJobError, match="not Job"):
        run_job({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "y"}}, api=FakeApi({}))
