"""Rollouts that keep serving, as the overlays render them: Standard mode's InferenceServices roll with no replica
unavailable, and k8s/overlays/canary's predictor is a Serverless canary that KServe and Knative accept (one container
port, Knative's autoscaler). A service switched to Serverless by its annotation alone shows the check failing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.test_k8s import K8S, _isvc_pod, kustomize, label, named, rendered

pytestmark = pytest.mark.integration

MODE = "serving.kserve.io/deploymentMode"
SERVING_OVERLAYS = ["base", "overlays/local", "overlays/gpu", "overlays/prod", "overlays/canary"]


def serverless_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What KServe's webhook and Knative refuse of each Serverless InferenceService: more than one container port in
    its runtime, the hpa autoscaler class, a cpu/memory scaleMetric, and a Deployment strategy (Standard mode's)."""
    problems = []
    for isvc in (o for o in objects if o["kind"] == "InferenceService"):
        if isvc["metadata"].get("annotations", {}).get(MODE) != "Serverless":
            continue
        predictor, where = isvc["spec"]["predictor"], label(isvc)
        pod = _isvc_pod(isvc, objects)
        ports = [p["containerPort"] for c in (pod or {}).get("containers", []) for p in c.get("ports", [])]
        if len(ports) > 1:
            problems.append(f"{where}: Knative allows one container port, the pod declares {ports}")
        if isvc["metadata"]["annotations"].get("serving.kserve.io/autoscalerClass") == "hpa":
            problems.append(f"{where}: autoscalerClass hpa in Serverless mode")
        if predictor.get("scaleMetric") in ("cpu", "memory"):
            problems.append(f"{where}: scaleMetric {predictor['scaleMetric']} needs the hpa class")
        if "deploymentStrategy" in predictor:
            problems.append(f"{where}: deploymentStrategy is Standard mode's")
    return problems


@pytest.mark.parametrize("name", SERVING_OVERLAYS)
def test_standard_services_roll_out_without_taking_a_replica_away(name: str):
    standard = [
        o
        for o in rendered(name)
        if o["kind"] == "InferenceService" and o["metadata"]["annotations"][MODE] == "Standard"
    ]
    assert standard
    for isvc in standard:
        strategy = isvc["spec"]["predictor"].get("deploymentStrategy")
        assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}, label(isvc)
    assert not serverless_problems(rendered(name))


def test_the_canary_overlay_runs_the_predictor_serverless_with_a_canary_knative_accepts():
    objects = rendered("overlays/canary")
    isvc = named(objects, "InferenceService", "musicgen")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"][MODE] == "Serverless"
    assert predictor["canaryTrafficPercent"] == 10
    assert not serverless_problems(objects), "\n".join(serverless_problems(objects))
    (runtime,) = named(objects, "ServingRuntime", "musicops-predictor")["spec"]["containers"]
    assert runtime["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert runtime[probe]["httpGet"]["port"] == 8080  # the one port left
    # Triton stays in Standard mode; Knative's gateway and activator may reach the predictor's queue-proxy.
    assert named(objects, "InferenceService", "musicgen-triton")["metadata"]["annotations"][MODE] == "Standard"
    knative = named(objects, "NetworkPolicy", "allow-knative-to-predictor")["spec"]
    assert knative["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "musicgen"}
    assert 8012 in [p["port"] for p in knative["ingress"][0]["ports"]]
    # Only the predictor's service, its runtime and the new policy differ from the base.
    base = {label(o): o for o in rendered("base")}
    changed = {label(o) for o in objects if base.get(label(o)) != o}
    assert changed == {
        "InferenceService/musicgen",
        "ServingRuntime/musicops-predictor",
        "NetworkPolicy/allow-knative-to-predictor",
    }


def test_the_serverless_check_bites_on_the_base_service_switched_by_its_annotation_alone(tmp_path: Path):
    overlay = tmp_path / "serverless-only"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(K8S / 'base', overlay)}]\n"
        "patches:\n"
        "  - target: {kind: InferenceService, name: musicgen}\n"
        "    patch: |-\n"
        "      - op: replace\n"
        "        path: /metadata/annotations/serving.kserve.io~1deploymentMode\n"
        "        value: Serverless\n"
    )
    problems = "\n".join(serverless_problems(kustomize(overlay)))
    for expected in (
        "Knative allows one container port",
        "autoscalerClass hpa",
        "scaleMetric cpu",
        "deploymentStrategy",
    ):
        assert f"InferenceService/musicgen: {expected}" in problems
