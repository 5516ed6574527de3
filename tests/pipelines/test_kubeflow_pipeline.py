"""The Kubeflow pipeline: a whole run under kfp.local on micro parameters (every step's artifacts, the gate
deciding whether deploy runs, the cache re-running only what changed), and the compiled YAML (committed and
current; every component, the condition, resource requests, retries)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.kubeflow import configure
from components.pipeline_io import flat_metrics
from pipelines.compile import COMPILED_DIR, compile_all
from pipelines.local_run import parse_settings, run_local
from pipelines.retrain import DISTRIBUTED_NAME, PIPELINE_NAME, default_params, params_text
from pipelines.submit import PipelineHostError, cron_expression
from settings.params import ParamsError, with_overrides
from tests.support import REPO
from tests.support.crds import validate_against_crd
from tests.support.micro_pipeline import MICRO_PARAMS

COMPONENTS = ("configure", "prepare", "validate", "augment", "train-codec", "tokenize", "train", "evaluate", "export")


def _micro_params(promoted: Path, **evaluate: object) -> dict:
    overrides = {f"{section}.{key}": value for section, values in MICRO_PARAMS.items() for key, value in values.items()}
    # No thresholds and no promoted model: a 3-step model passes, so the deploy branch runs.
    overrides |= {
        "evaluate.max_fad_ratio": None,
        "evaluate.min_tempo_match": None,
        "evaluate.min_label_accuracy": None,
        "evaluate.promoted": str(promoted),
    }
    overrides |= {f"evaluate.{key}": value for key, value in evaluate.items()}
    return with_overrides(default_params(), overrides)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Two runs on one pipeline root: the first passes the gate, the second changes only a threshold."""
    root = tmp_path_factory.mktemp("pipeline")
    first = run_local(_micro_params(root / "promoted"), root)
    second = run_local(_micro_params(root / "promoted", min_label_accuracy=1.5), root)  # no model reaches accuracy 1.5
    return first, second


@pytest.mark.integration
def test_a_local_run_leaves_every_steps_artifacts(local_runs):
    run = local_runs[0].folder
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == sorted([*COMPONENTS, "deploy"])
    assert (run / "prepare/corpus/manifest.jsonl").is_file()
    assert json.loads((run / "validate/validation/summary.json").read_text())["success"] is True
    assert "<html" in (run / "validate/report").read_text().lower()
    assert json.loads((run / "validate/metrics").read_text())["failed"] == 0
    assert (run / "augment/augmented/manifest.jsonl").is_file()
    assert (run / "train-codec/codec/config.json").is_file()
    assert (run / "tokenize/tokens/codes.npy").is_file()
    assert (run / "train/model/musicops.json").is_file()
    assert json.loads((run / "train/metrics").read_text())["step"] == MICRO_PARAMS["train"]["steps"]
    metrics = json.loads((run / "evaluate/metrics").read_text())
    assert {"fad.mel.model", "fad.mel.untrained", "fad.mel.real", "adherence.label_accuracy.model"} <= set(metrics)
    assert "Fréchet Audio Distance" in (run / "evaluate/report").read_text()
    assert (run / "export/onnx/decoder_with_past_model.onnx").is_file()
    assert (run / "export/triton/musicgen/config.pbtxt").is_file()


@pytest.mark.integration
def test_the_gate_passing_deploy_writes_the_inference_service_for_the_export(local_runs):
    first = local_runs[0]
    assert first.manifest is not None and first.report.is_file()
    service = yaml.safe_load(first.manifest.read_text())
    assert service["kind"] == "InferenceService"
    assert service["spec"]["predictor"]["model"]["storageUri"] == f"file://{first.folder / 'export' / 'onnx'}"
    validate_against_crd(service, "kserve-serving.kserve.io_inferenceservices.yaml")


@pytest.mark.integration
def test_a_threshold_change_reruns_only_evaluate_and_the_refusal_skips_deploy(local_runs):
    second = local_runs[1]
    assert second.manifest is None
    assert sorted(p.name for p in second.folder.iterdir() if p.is_dir()) == ["configure", "evaluate"]
    decision = json.loads((second.folder / "evaluate/evaluation/decision.json").read_text())
    assert decision["promote"] is False
    assert any("accuracy" in check["rule"] and not check["passed"] for check in decision["checks"])


@pytest.mark.unit
def test_the_committed_pipelines_are_current(tmp_path):
    fresh = compile_all(tmp_path)
    for path in fresh:
        committed = COMPILED_DIR / path.name
        assert committed.is_file(), f"{committed} is missing: run `musicops pipeline compile`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `musicops pipeline compile`"


def _compiled(name: str) -> tuple[dict, dict]:
    """(pipeline spec, platform spec) of a committed pipeline."""
    documents = list(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))
    return documents[0], documents[1] if len(documents) > 1 else {}


def _executor(spec: dict, component: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{component}"]["container"]


@pytest.mark.unit
def test_the_compiled_pipeline_holds_every_component_the_gate_and_the_resources():
    spec, platform = _compiled(PIPELINE_NAME)
    assert {f"comp-{name}" for name in (*COMPONENTS, "deploy")} <= set(spec["components"])
    gate = spec["root"]["dag"]["tasks"]["condition-1"]
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert "deploy" in spec["components"]["comp-condition-1"]["dag"]["tasks"]
    train = _executor(spec, "train")["resources"]
    assert train["cpuRequest"] == 8 and train["accelerator"]["resourceCount"] == "1"
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert _executor(spec, "evaluate")["resources"]["memoryRequest"] > 16
    assert "accelerator" not in _executor(spec, "export")["resources"]
    selectors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("train-codec", "train", "evaluate"):
        assert selectors[f"exec-{step}"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    deploy = spec["components"]["comp-condition-1"]["dag"]["tasks"]["deploy"]
    assert deploy["retryPolicy"]["maxRetryCount"] == 3
    assert deploy["cachingOptions"] == {}  # caching off: a deploy always re-applies
    assert spec["root"]["dag"]["tasks"]["train"]["cachingOptions"]["enableCache"] is True
    assert all(_executor(spec, name)["image"] == "ghcr.io/musicops/musicops:0.1.0" for name in COMPONENTS)


@pytest.mark.unit
def test_the_distributed_pipeline_trains_through_a_job_on_the_shared_volume():
    spec, platform = _compiled(DISTRIBUTED_NAME)
    assert "comp-train-distributed" in spec["components"] and "comp-train" not in spec["components"]
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-distributed"]
    assert executor["pvcMount"][0]["mountPath"] == "/workspace"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["job_kind"]["defaultValue"] == "trainjob" and inputs["nodes"]["defaultValue"] == 2


@pytest.mark.unit
def test_configure_keeps_params_for_empty_run_parameters_and_hands_out_sections():
    params = params_text(default_params())
    kept = configure.python_func(params, "", "", "", -1.0, -1.0)
    assert json.loads(kept.train)["preset"] == "tiny" and json.loads(kept.evaluate)["max_fad_ratio"] == 0.9
    changed = configure.python_func(params, "small", "/data/mine", "", 0.5, -1.0)
    assert json.loads(changed.train)["preset"] == json.loads(changed.codec)["preset"] == "small"
    assert json.loads(changed.data)["source"] == "/data/mine"
    assert json.loads(changed.evaluate)["max_fad_ratio"] == 0.5
    with pytest.raises(ParamsError, match=r"codec.preset 'huge' is not a preset"):
        configure.python_func(params, "huge", "", "", -1.0, -1.0)


@pytest.mark.unit
def test_configure_hands_the_codec_step_train_init_from_alone_and_refuses_a_second_codec():
    document = default_params()
    document["train"] = {**(document.get("train") or {}), "init_from": "promoted", "learning_rate": 0.01}
    sections = configure.python_func(params_text(document), "", "", "", -1.0, -1.0)
    assert sections.init_from == "promoted" and json.loads(sections.train)["init_from"] == "promoted"
    with pytest.raises(ParamsError, match=r"codec.pretrained is '/codecs/encodec'.*train.init_from is 'promoted'"):
        configure.python_func(params_text(document), "", "", "/codecs/encodec", -1.0, -1.0)
    spec, _ = _compiled(PIPELINE_NAME)
    codec_inputs = spec["root"]["dag"]["tasks"]["train-codec"]["inputs"]["parameters"]
    assert codec_inputs["init_from"]["taskOutputParameter"] == {
        "outputParameterKey": "init_from",
        "producerTask": "configure",
    }


@pytest.mark.unit
def test_overrides_name_what_is_wrong():
    with pytest.raises(ParamsError, match=r"'train.stepz'.*no key 'stepz'"):
        with_overrides(default_params(), {"train.stepz": 5})
    with pytest.raises(ParamsError, match=r"section.key"):
        with_overrides(default_params(), {"steps": 5})
    with pytest.raises(ParamsError, match=r"--set wants section.key=value"):
        parse_settings(["train.steps"])
    assert parse_settings(["train.steps=50", "data.source=rendered"]) == {"train.steps": 50, "data.source": "rendered"}


@pytest.mark.unit
def test_metrics_flatten_to_dotted_numbers():
    nested = {"fad": {"mel": {"model": 4.0, "real": float("nan")}}, "prompts": 24, "ok": True, "settings": {"x": "a"}}
    assert flat_metrics(nested) == {"fad.mel.model": 4.0, "prompts": 24.0, "ok": 1.0}


@pytest.mark.unit
def test_cron_takes_five_or_six_fields():
    assert cron_expression("0 3 * * 1") == "0 0 3 * * 1"
    assert cron_expression("30 0 3 * * *") == "30 0 3 * * *"
    with pytest.raises(PipelineHostError, match="5 fields"):
        cron_expression("daily")


@pytest.mark.integration
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_without_a_cluster_submit_and_schedule_fail_in_one_line(command):
    args = [sys.executable, "-m", "musicops.cli", "pipeline", command, "--host", "http://127.0.0.1:9"]
    if command == "schedule":
        args += ["--cron", "0 3 * * 1"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "error: Kubeflow Pipelines host http://127.0.0.1:9 is unreachable (connection error)"
    )
