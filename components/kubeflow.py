"""The pipeline's stages as Kubeflow Pipelines v2 components, each calling the stage function DVC runs.

Style: lightweight Python components (`@dsl.component`) on the project's image, with
`install_kfp_package=False`. KFP ships each function's source to the step and runs it on the image's
interpreter, where musicops and kfp are installed, so the same component runs under `kfp.local`'s
SubprocessRunner (on this interpreter, no Docker) and in a cluster pod; a container component would need
Docker to run locally, and `packages_to_install` would reach for a registry at every step. Because only
the function's source travels, each one imports what it needs inside its body and stays a few lines:
the work is in the stage modules (components/prepare.py ...) and components/pipeline_io.py.

Artifacts are folders (Dataset: a corpus or tokens; Model: a codec, a model, an export) except Metrics
(flat numbers the KFP UI compares across runs) and HTML (a report the UI shows inline). Every stage
receives only the params.yaml sections it reads, as JSON text, from `configure` (params.yaml with the run's
overrides; a KFP dict parameter cannot hold its nulls): as under DVC, a cached step re-runs only when its
own sections or inputs change.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.cluster.kube import IMAGE


def component(function):
    """A lightweight component on the project image; kfp is already installed there."""
    return dsl.component(function, base_image=IMAGE, install_kfp_package=False)


@component
def configure(
    params: str, preset: str, data_source: str, codec_pretrained: str, max_fad_ratio: float, min_label_accuracy: float
) -> NamedTuple(
    "Sections",
    [
        ("data", str),
        ("validate", str),
        ("augment", str),
        ("codec", str),
        ("tokenize", str),
        ("train", str),
        ("evaluate", str),
        ("triton", str),
        ("export", str),
        ("deploy", str),
        ("init_from", str),
    ],
):
    """Apply the run's parameters to params.yaml's contents (JSON text), check every section before any work,
    and hand each step only its sections, so that a cached step re-runs only when they change.

    "" and negative thresholds keep params.yaml's values (a pipeline parameter cannot be null). `init_from`
    is train.init_from alone: the codec step reads it, and a change to the rest of train must not re-run it."""
    import json
    from collections import namedtuple

    from components.train_codec import check_codec_source
    from settings.params import section_from, with_overrides

    overrides = {
        "codec.preset": preset,
        "train.preset": preset,
        "data.source": data_source,
        "codec.pretrained": codec_pretrained,
        "evaluate.max_fad_ratio": max_fad_ratio,
        "evaluate.min_label_accuracy": min_label_accuracy,
    }
    kept = {
        key: value for key, value in overrides.items() if value != "" and not (isinstance(value, float) and value < 0)
    }
    document = with_overrides(json.loads(params), kept)
    init_from = section_from(document, "train").init_from
    check_codec_source(section_from(document, "codec"), init_from)
    # The stages' sections (monitor is read by the serving side, not by a step).
    names = ("data", "validate", "augment", "codec", "tokenize", "train", "evaluate", "triton", "export", "deploy")
    sections = [json.dumps(document.get(name) or {}) for name in names]
    return namedtuple("Sections", [*names, "init_from"])(*sections, init_from)


@component
def prepare(data_params: str, corpus: Output[Dataset]) -> None:
    """Render the offline corpus, or ingest `data.source`, into the corpus artifact."""
    from components.prepare import prepare as prepare_corpus
    from settings.params import section_text

    clips = prepare_corpus(section_text(data_params, "data"), corpus.path, show_progress=False)
    corpus.metadata["clips"] = len(clips)


@component
def validate(
    data_params: str,
    validate_params: str,
    corpus: Input[Dataset],
    validation: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Great Expectations over the corpus; a failed check stops the run after its report is written."""
    import shutil
    from pathlib import Path

    from components.pipeline_io import log_metrics
    from components.validate import validate_corpus
    from settings.params import section_text

    summary = validate_corpus(
        Path(corpus.path),
        Path(validation.path),
        section_text(data_params, "data"),
        section_text(validate_params, "validate"),
    )
    shutil.copyfile(Path(validation.path) / "data_docs" / "index.html", report.path)
    log_metrics(metrics, {"clips": summary.clips, "checks": summary.checks, "failed": len(summary.failures)})
    if not summary.success:
        failed = "; ".join(f"{failure.expectation} ({failure.table})" for failure in summary.failures[:5])
        raise RuntimeError(f"corpus validation failed {len(summary.failures)} check(s): {failed}")


@component
def augment(
    data_params: str,
    augment_params: str,
    corpus: Input[Dataset],
    validation: Input[Artifact],
    augmented: Output[Dataset],
) -> None:
    """Augmented copies of the validated corpus's training clips (`validation` orders this after validate)."""
    from components.augment import augment_corpus
    from settings.params import section_text

    clips = augment_corpus(
        corpus.path, augmented.path, section_text(data_params, "data"), section_text(augment_params, "augment")
    )
    augmented.metadata["clips"] = len(clips)


@component
def train_codec(
    data_params: str,
    codec_params: str,
    init_from: str,
    corpus: Input[Dataset],
    augmented: Input[Dataset],
    codec: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Train the codec, copy `codec.pretrained` through, or write the codec of the model `init_from`
    (train.init_from) starts from, without training (the same switch as under DVC)."""
    from pathlib import Path

    from components.pipeline_io import log_metrics
    from components.train_codec import train_codec as fit_codec
    from settings.params import section_text

    report = fit_codec(
        [Path(corpus.path), Path(augmented.path)],
        Path(codec.path),
        section_text(data_params, "data"),
        section_text(codec_params, "codec"),
        show_progress=False,
        init_from=init_from,
    )
    log_metrics(metrics, report.metrics)


@component
def tokenize(
    tokenize_params: str,
    codec: Input[Model],
    corpus: Input[Dataset],
    augmented: Input[Dataset],
    tokens: Output[Dataset],
) -> None:
    """Encode the corpus (and, per `tokenize.include_augmented`, its augmented copies) with the codec."""
    from pathlib import Path

    from components.tokenize import tokenize as encode
    from settings.params import section_text

    settings = section_text(tokenize_params, "tokenize")
    corpora = [Path(corpus.path)] + ([Path(augmented.path)] if settings.include_augmented else [])
    clips = encode(Path(codec.path), corpora, Path(tokens.path), settings)
    tokens.metadata["clips"] = len(clips)


@component
def train(
    train_params: str,
    tokens: Input[Dataset],
    codec: Input[Model],
    model: Output[Model],
    training: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Train the MusicGen decoder in this step's pod; checkpoints and dvclive logs go to `training`."""
    import json
    from pathlib import Path

    from components.pipeline_io import log_metrics
    from components.train import train as fit
    from settings.params import section_text

    fit(
        Path(tokens.path),
        Path(codec.path),
        Path(training.path),
        Path(model.path),
        section_text(train_params, "train"),
        show_progress=False,
    )
    log_metrics(metrics, json.loads((Path(training.path) / "dvclive" / "metrics.json").read_text()))


@component
def train_distributed(
    train_params: str,
    tokens: Input[Dataset],
    codec: Input[Model],
    model: Output[Model],
    training: Output[Artifact],
    metrics: Output[Metrics],
    job_kind: str,
    nodes: int,
    procs_per_node: int,
    gpus_per_node: int,
    namespace: str,
    workspace_pvc: str,
    run_name: str,
) -> None:
    """Train on `nodes` nodes: stage the inputs on the shared volume, run a TrainJob (or a PyTorchJob) of
    torchrun processes there and wait for it, then bring the model and logs back as this step's outputs."""
    import json
    from pathlib import Path

    import yaml

    from components.cluster.kube import IMAGE
    from components.cluster.training_job import HARDENED_RUNTIME, JOB_KINDS, JobSpec, run_job
    from components.pipeline_io import copy_folder, log_metrics

    spec = JobSpec(
        name=f"musicops-train-{run_name[:8]}".lower(),
        namespace=namespace,
        image=IMAGE,
        nodes=nodes,
        procs_per_node=procs_per_node,
        gpus_per_node=gpus_per_node,
        workspace_pvc=workspace_pvc,
        workdir=f"runs/{run_name}",
        runtime=HARDENED_RUNTIME,  # k8s/training/trainjob: torch-distributed with non-root, read-only pods
    )
    spec.check()
    workdir = Path(spec.mount_path) / spec.workdir
    copy_folder(Path(tokens.path), workdir / "tokens")
    copy_folder(Path(codec.path), workdir / "codec")
    (workdir / "params.yaml").write_text(yaml.safe_dump({"train": json.loads(train_params)}, sort_keys=False))
    run_job(JOB_KINDS[job_kind](spec))
    copy_folder(workdir / "model", model.path)
    copy_folder(workdir / "train", training.path)
    log_metrics(metrics, json.loads((Path(training.path) / "dvclive" / "metrics.json").read_text()))


@component
def evaluate(
    evaluate_params: str,
    model: Input[Model],
    corpus: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """FAD, adherence and quality beside the baselines; returns the gate's decision (deploy runs on True)."""
    import json
    import shutil
    from pathlib import Path

    from components.evaluate import evaluate as measure
    from components.pipeline_io import log_metrics
    from settings.params import section_text

    result = measure(
        Path(model.path), Path(corpus.path), Path(evaluation.path), section_text(evaluate_params, "evaluate")
    )
    shutil.copyfile(Path(evaluation.path) / "report.html", report.path)
    log_metrics(metrics, result.metrics)
    evaluation.metadata["decision"] = json.dumps(result.decision.to_json())
    return result.decision.promote


@component
def export(
    export_params: str, triton_params: str, model: Input[Model], onnx: Output[Model], triton: Output[Model]
) -> None:
    """ONNX graphs parity-checked against torch (a breach fails the step), and their Triton repository."""
    from pathlib import Path

    from components.export import export as export_onnx
    from components.triton_repository import write_repository
    from settings.params import section_text

    report = export_onnx(Path(model.path), Path(onnx.path), section_text(export_params, "export"))
    onnx.metadata["parity"] = {graph: parity.relative for graph, parity in report.parity.items()}
    write_repository(Path(onnx.path), Path(triton.path), section_text(triton_params, "triton"))


@component
def deploy(
    deploy_params: str, onnx: Input[Model], service_name: str, namespace: str, apply: bool, manifest: Output[Artifact]
) -> str:
    """Roll the export out as the KServe InferenceService, by `deploy.rollout`: rolling (Standard mode: apply, then
    wait until ready) or canary (Serverless mode: a share of traffic first, then promote or roll back). With `apply`
    off, only write the manifest."""
    from pathlib import Path

    import yaml

    from components.cluster.deploy import SERVERLESS, STANDARD, ServiceSpec, inference_service, storage_uri
    from components.cluster.rollout import roll_out
    from settings.params import section_text

    settings = section_text(deploy_params, "deploy")
    canary = settings.rollout == "canary"
    # Run here (kfp.local), the export is a local folder: the manifest names it as file:// and is not applied.
    spec = ServiceSpec(
        name=service_name,
        namespace=namespace,
        storage_uri=storage_uri(onnx.uri, local_ok=not apply),
        service_account="musicops-predictor",  # k8s/base: carries the object store's credentials
        mode=SERVERLESS if canary else STANDARD,
        canary_percent=settings.canary_percent if canary else None,
    )
    service = inference_service(spec)
    Path(manifest.path).write_text(yaml.safe_dump(service, sort_keys=False))
    if not apply:
        return f"written, not applied: {manifest.path}"
    return roll_out(service)
