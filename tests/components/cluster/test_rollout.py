"""Rollouts without dropping traffic: Standard mode's rolling update in the manifest, and the canary of Serverless mode
promoted or rolled back against a stand-in API server whose status moves as KServe's controller moves it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp.dsl import Artifact, Model

from components.cluster.deploy import SERVERLESS, DeployError, ServiceSpec, inference_service
from components.cluster.rollout import canary_rollout, canary_state, roll_out
from components.kubeflow import deploy as deploy_step
from settings.params import ParamsError, section_from
from tests.support.crds import validate_against_crd
from tests.support.fake_kube import FakeKServe

pytestmark = pytest.mark.unit

ISVC_CRD = "kserve-serving.kserve.io_inferenceservices.yaml"
OLD, NEW = "s3://musicops/models/run-1/onnx", "s3://musicops/models/run-2/onnx"


def canary(uri: str = NEW, percent: int = 10) -> dict:
    return inference_service(ServiceSpec(storage_uri=uri, mode=SERVERLESS, canary_percent=percent))


def serving(uri: str = OLD) -> dict:
    """A Serverless service already serving revision 1 with all traffic."""
    return inference_service(ServiceSpec(storage_uri=uri, mode=SERVERLESS))


def patches(api: FakeKServe) -> list:
    return [
        where["body"]["spec"]["predictor"]["canaryTrafficPercent"] for action, where in api.calls if action == "patch"
    ]


# -- the manifests -----------------------------------------------------------------------------------------------------


def test_standard_mode_rolls_out_with_no_replica_unavailable():
    obj = inference_service(ServiceSpec(storage_uri=NEW))
    validate_against_crd(obj, ISVC_CRD)
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = obj["spec"]["predictor"]
    assert predictor["deploymentStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert "canaryTrafficPercent" not in predictor


def test_serverless_mode_carries_the_canary_and_leaves_out_what_knative_refuses():
    obj = canary(percent=25)
    validate_against_crd(obj, ISVC_CRD)
    annotations, predictor = obj["metadata"]["annotations"], obj["spec"]["predictor"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "serving.kserve.io/autoscalerClass" not in annotations  # hpa is refused in Serverless mode
    assert predictor["canaryTrafficPercent"] == 25
    assert not {"scaleMetric", "scaleTarget", "deploymentStrategy"} & set(predictor)
    assert predictor["containerConcurrency"] == 8  # what Knative's autoscaler aims below
    assert "canaryTrafficPercent" not in serving()["spec"]["predictor"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"canary_percent": 10}, "in Serverless mode"),  # Standard mode cannot split traffic
        ({"mode": SERVERLESS, "canary_percent": 101}, "canary_percent must be a percentage"),
        ({"mode": "RawDeployment"}, "mode must be Standard or Serverless"),
    ],
)
def test_the_builder_refuses_a_canary_kserve_would_not_run(changes: dict, named: str):
    with pytest.raises(DeployError, match=named):
        inference_service(ServiceSpec(storage_uri=NEW, **changes))


# -- canary: promote or roll back --------------------------------------------------------------------------------------


def test_a_healthy_canary_takes_its_share_then_all_traffic():
    api = FakeKServe(existing=serving())
    message = roll_out(canary(), api=api, timeout_s=5, poll_s=0)
    assert message == "promoted InferenceService musicops/musicgen: revision musicgen-predictor-00002 takes all traffic"
    # The split was in force before promotion: 90% on the old revision, 10% on the canary.
    assert [("musicgen-predictor-00001", 90), ("musicgen-predictor-00002", 10)] in api.traffic_seen
    assert patches(api) == [None]  # promotion removes canaryTrafficPercent
    final = api.obj["spec"]["predictor"]
    assert "canaryTrafficPercent" not in final and final["model"]["storageUri"] == NEW
    assert api.traffic_seen[-1] == [("musicgen-predictor-00002", 100)]
    validate_against_crd({k: v for k, v in api.obj.items() if k != "status"}, ISVC_CRD)


def test_a_canary_that_never_becomes_ready_is_rolled_back_naming_why():
    api = FakeKServe(existing=serving(), healthy=False)
    with pytest.raises(DeployError) as caught:
        canary_rollout(canary(), api=api, timeout_s=0.2, poll_s=0.01)
    assert str(caught.value) == (
        "canary revision musicgen-predictor-00002 of InferenceService musicops/musicgen not ready after 0.2 s "
        "(latest ready revision is musicgen-predictor-00001, not musicgen-predictor-00002); "
        "rolled back: all traffic is on the previously rolled-out revision"
    )
    assert patches(api) == [0]
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert all(seen == [("musicgen-predictor-00001", 100)] for seen in api.traffic_seen)  # the canary took none


def test_a_canary_knative_gives_up_on_is_rolled_back_at_once():
    api = FakeKServe(existing=serving(), healthy=False, fail_after=3)
    with pytest.raises(
        DeployError, match=r"failed: RevisionFailed \(Revision musicgen-predictor-00002 failed .*rolled back"
    ):
        canary_rollout(canary(), api=api, timeout_s=60, poll_s=0)
    actions = [action for action, _ in api.calls]
    # The apply's read, then three polls until Knative gives up: not the whole minute.
    assert actions == ["get", "replace", "get", "get", "get", "patch"]
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_a_new_service_that_fails_has_nothing_to_roll_back_to():
    api = FakeKServe(healthy=False, fail_after=2)
    with pytest.raises(DeployError, match="nothing to roll back to"):
        canary_rollout(canary(), api=api, timeout_s=60, poll_s=0)
    assert [action for action, _ in api.calls][:2] == ["get", "create"] and patches(api) == []


def test_a_new_service_is_promoted_once_its_first_revision_is_ready():
    api = FakeKServe()
    status = canary_rollout(canary(), api=api, timeout_s=5, poll_s=0)
    assert status["components"]["predictor"]["traffic"][0]["percent"] == 100
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]


def test_a_canary_needs_serverless_mode_and_a_percentage():
    api = FakeKServe(existing=serving())
    with pytest.raises(DeployError, match="only in Serverless mode"):
        canary_rollout(serving(NEW), api=api)
    assert api.calls == []


def test_the_canary_state_waits_for_the_controller_to_see_the_new_spec():
    stale = {"metadata": {"generation": 3}, "status": {"observedGeneration": 2}}
    assert canary_state(stale)[0] == "pending"
    ready = {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 3,
            "components": {
                "predictor": {
                    "latestCreatedRevision": "r2",
                    "latestReadyRevision": "r2",
                    "traffic": [{"revisionName": "r1", "percent": 90}, {"revisionName": "r2", "percent": 10}],
                }
            },
        },
    }
    assert canary_state(ready) == ("ready", "revision r2 is ready and takes 10% of traffic")
    ready["status"]["components"]["predictor"]["traffic"][1]["percent"] = 0
    assert canary_state(ready)[0] == "pending"


# -- rolling (Standard mode) -------------------------------------------------------------------------------------------


def test_rolling_applies_and_waits_until_ready_without_touching_traffic():
    api = FakeKServe(existing=inference_service(ServiceSpec(storage_uri=OLD)))
    message = roll_out(inference_service(ServiceSpec(storage_uri=NEW)), api=api, timeout_s=5, poll_s=0)
    assert message == "replaced InferenceService musicops/musicgen, ready at http://musicgen.musicops.example.com"
    assert patches(api) == [] and api.obj["spec"]["predictor"]["model"]["storageUri"] == NEW


def test_rolling_reports_a_service_that_does_not_come_up():
    api = FakeKServe(existing=inference_service(ServiceSpec(storage_uri=OLD)), healthy=False)
    with pytest.raises(DeployError, match=r"not ready after 0\.05 s"):
        roll_out(inference_service(ServiceSpec(storage_uri=NEW)), api=api, timeout_s=0.05, poll_s=0.01)


# -- the setting and the pipeline's step -------------------------------------------------------------------------------


def test_the_deploy_settings_default_to_rolling_and_refuse_what_is_no_canary():
    settings = section_from({}, "deploy")
    assert (settings.rollout, settings.canary_percent) == ("rolling", 10)
    with pytest.raises(ParamsError, match=r"deploy\.rollout must be one of rolling, canary"):
        section_from({"deploy": {"rollout": "blue-green"}}, "deploy")
    for percent in (0, 100):
        with pytest.raises(ParamsError, match=r"deploy\.canary_percent must be 1 to 99"):
            section_from({"deploy": {"canary_percent": percent}}, "deploy")


@pytest.mark.parametrize(("rollout", "mode"), [("rolling", "Standard"), ("canary", "Serverless")])
def test_the_pipeline_step_writes_the_manifest_of_its_rollout(tmp_path: Path, rollout: str, mode: str):
    onnx = Model(name="onnx", uri=str(tmp_path / "export" / "onnx"))
    manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
    params = json.dumps({"rollout": rollout, "canary_percent": 20})
    answer = deploy_step.python_func(params, onnx, "musicgen", "musicops", False, manifest)
    assert answer == f"written, not applied: {manifest.path}"
    service = yaml.safe_load(Path(manifest.path).read_text())
    validate_against_crd(service, ISVC_CRD)
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    predictor = service["spec"]["predictor"]
    assert predictor.get("canaryTrafficPercent") == (20 if rollout == "canary" else None)
    assert ("deploymentStrategy" in predictor) == (rollout == "rolling")
