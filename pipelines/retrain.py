"""The retraining pipeline: prepare -> validate -> augment -> train_codec -> tokenize -> train -> evaluate
-> export -> deploy (under `dsl.If` on the evaluation gate), wiring the components of components/kubeflow.py.

Two shapes, compiled to two files: `musicops-retrain` trains in its own pod; `musicops-retrain-distributed`
trains through a Kubeflow Trainer TrainJob (or a Training Operator PyTorchJob) across nodes, with the
inputs staged on a shared volume. Resource shapes (GPUs, node selectors) are compile-time settings
(`Resources`): they describe the cluster, not a run.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kfp import dsl, kubernetes

from components import kubeflow as steps

PIPELINE_NAME = "musicops-retrain"
DISTRIBUTED_NAME = "musicops-retrain-distributed"
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
# Retries for the steps that talk to the cluster (its API server, the job scheduler), which fail for
# reasons that pass: an API server restart, a node drained under a pod.
RETRIES = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0}


@dataclass(frozen=True)
class Resources:
    """What the heavy steps ask of the cluster. GPU steps land on nodes with `gpu_node_label` (NVIDIA's GPU
    feature discovery sets nvidia.com/gpu.present=true); with gpus=0 nothing asks for one."""

    gpus: int = 1  # per GPU step: train_codec, train, evaluate (generation)
    gpu_node_label: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    train_timeout_s: int = 48 * 3600


def default_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml's contents: the pipeline's default `params` (a run may pass another document)."""
    return yaml.safe_load(path.read_text())


def params_text(document: dict[str, Any]) -> str:
    """A params document as the pipeline's `params` parameter takes it: JSON text (nulls included)."""
    return json.dumps(document, sort_keys=False)


def _heavy(task: dsl.PipelineTask, cpu: str, memory: str, gpus: int, resources: Resources) -> dsl.PipelineTask:
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    if gpus:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        kubernetes.add_node_selector(task, *resources.gpu_node_label)
    return task


def _to_tokens(settings, resources: Resources):
    """prepare -> validate -> augment -> train_codec -> tokenize; returns (corpus, codec, tokens) tasks."""
    corpus = steps.prepare(data_params=settings["data"]).set_display_name("prepare corpus")
    _heavy(corpus, "2", "8Gi", 0, resources)
    checked = steps.validate(
        data_params=settings["data"], validate_params=settings["validate"], corpus=corpus.outputs["corpus"]
    ).set_display_name("validate")
    augmented = steps.augment(
        data_params=settings["data"],
        augment_params=settings["augment"],
        corpus=corpus.outputs["corpus"],
        validation=checked.outputs["validation"],
    ).set_display_name("augment")
    _heavy(augmented, "2", "8Gi", 0, resources)
    # With codec_pretrained set, or train.init_from other than scratch, this step copies a codec through in
    # seconds instead of training: kfp.local cannot merge artifacts of two dsl.If branches (dsl.OneOf), so the
    # step decides.
    codec = steps.train_codec(
        data_params=settings["data"],
        codec_params=settings["codec"],
        init_from=settings["init_from"],
        corpus=corpus.outputs["corpus"],
        augmented=augmented.outputs["augmented"],
    ).set_display_name("train codec")
    _heavy(codec, "4", "16Gi", resources.gpus, resources)
    tokens = steps.tokenize(
        tokenize_params=settings["tokenize"],
        codec=codec.outputs["codec"],
        corpus=corpus.outputs["corpus"],
        augmented=augmented.outputs["augmented"],
    ).set_display_name("tokenize")
    _heavy(tokens, "4", "16Gi", 0, resources)
    return corpus, codec, tokens


def _evaluate_and_deploy(settings, corpus, trained, service_name, namespace, deploy_to_cluster, resources):
    """evaluate and export the trained model; deploy the export when the gate passes. Returns the report."""
    evaluation = steps.evaluate(
        evaluate_params=settings["evaluate"], model=trained.outputs["model"], corpus=corpus.outputs["corpus"]
    ).set_display_name("evaluate")
    _heavy(evaluation, "4", "16Gi", resources.gpus, resources)
    exported = steps.export(
        export_params=settings["export"], triton_params=settings["triton"], model=trained.outputs["model"]
    ).set_display_name("export")
    _heavy(exported, "4", "16Gi", 0, resources)
    with dsl.If(evaluation.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
        deployed = steps.deploy(
            deploy_params=settings["deploy"],
            onnx=exported.outputs["onnx"],
            service_name=service_name,
            namespace=namespace,
            apply=deploy_to_cluster,
        ).set_display_name("deploy")
        # Always re-apply: a cached deploy would skip restoring a service someone deleted.
        deployed.set_caching_options(False).set_retry(**RETRIES)
    return evaluation.outputs["report"]


def _configure(params, preset, data_source, codec_pretrained, max_fad_ratio, min_label_accuracy):
    return steps.configure(
        params=params,
        preset=preset,
        data_source=data_source,
        codec_pretrained=codec_pretrained,
        max_fad_ratio=max_fad_ratio,
        min_label_accuracy=min_label_accuracy,
    ).set_display_name("configure")


DESCRIPTION = "Retrain, evaluate and export the musicops MusicGen model; deploy it to KServe when the gate passes."


def build(distributed: bool = False, resources: Resources | None = None, params: dict[str, Any] | None = None):
    """The pipeline function (decorated, ready for `kfp.compiler` or a `kfp.local` call)."""
    resources = resources or Resources()
    default = params_text(params if params is not None else default_params())

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def retrain(
        params: str = default,
        preset: str = "",
        data_source: str = "",
        codec_pretrained: str = "",
        max_fad_ratio: float = -1.0,
        min_label_accuracy: float = -1.0,
        service_name: str = "musicgen",
        namespace: str = "musicops",
        deploy_to_cluster: bool = True,
    ) -> dsl.HTML:
        settings = _configure(params, preset, data_source, codec_pretrained, max_fad_ratio, min_label_accuracy).outputs
        corpus, codec, tokens = _to_tokens(settings, resources)
        trained = steps.train(
            train_params=settings["train"], tokens=tokens.outputs["tokens"], codec=codec.outputs["codec"]
        ).set_display_name("train")
        _heavy(trained, "8", "32Gi", resources.gpus, resources)
        kubernetes.set_timeout(trained, resources.train_timeout_s)
        return _evaluate_and_deploy(settings, corpus, trained, service_name, namespace, deploy_to_cluster, resources)

    @dsl.pipeline(name=DISTRIBUTED_NAME, description=DESCRIPTION + " Trains across nodes with a TrainJob.")
    def retrain_distributed(
        params: str = default,
        preset: str = "",
        data_source: str = "",
        codec_pretrained: str = "",
        max_fad_ratio: float = -1.0,
        min_label_accuracy: float = -1.0,
        service_name: str = "musicgen",
        namespace: str = "musicops",
        deploy_to_cluster: bool = True,
        job_kind: str = "trainjob",
        nodes: int = 2,
        procs_per_node: int = 0,  # 0: one process per GPU (one on CPU nodes)
        gpus_per_node: int = 1,
        workspace_pvc: str = "musicops-workspace",
    ) -> dsl.HTML:
        settings = _configure(params, preset, data_source, codec_pretrained, max_fad_ratio, min_label_accuracy).outputs
        corpus, codec, tokens = _to_tokens(settings, resources)
        trained = steps.train_distributed(
            train_params=settings["train"],
            tokens=tokens.outputs["tokens"],
            codec=codec.outputs["codec"],
            job_kind=job_kind,
            nodes=nodes,
            procs_per_node=procs_per_node,
            gpus_per_node=gpus_per_node,
            namespace=namespace,
            workspace_pvc=workspace_pvc,
            run_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("train (distributed job)")
        # The job, not this pod, does the work; the step stages data on the shared volume and waits.
        trained.set_retry(**RETRIES)
        kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path="/workspace")
        kubernetes.set_timeout(trained, resources.train_timeout_s)
        return _evaluate_and_deploy(settings, corpus, trained, service_name, namespace, deploy_to_cluster, resources)

    return retrain_distributed if distributed else retrain
