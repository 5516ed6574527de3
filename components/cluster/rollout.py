"""Replacing the served model without dropping traffic, in either of KServe's deployment modes.

    roll_out(inference_service(ServiceSpec(storage_uri=uri)))                                   # rolling (Standard)
    roll_out(inference_service(ServiceSpec(storage_uri=uri, mode=SERVERLESS, canary_percent=10)))   # canary

Standard mode needs no steering: the predictor's Deployment rolls (deploy.ROLLING_UPDATE keeps every old pod until a
new one is ready), so `roll_out` applies the service and waits for it to be ready.

Serverless (Knative) mode is the only one where KServe splits traffic between revisions. A canary rollout applies the
service with `canaryTrafficPercent`, so the new revision takes that share while the previous one keeps the rest, and
watches the predictor's status (`status.components.predictor`):
- `latestCreatedRevision`: the revision of the newest spec; `latestReadyRevision`: the newest one that is ready;
- `traffic`: [{revisionName, percent, tag ("latest" or "prev"), latestRevision}], the split in force;
- the condition `LatestDeploymentReady` (Serverless only): False once Knative gives the newest revision up (a crash
  loop, an image it cannot pull, a progress deadline passed), Unknown while it is still coming up.
When the canary revision is ready and takes its share, `canaryTrafficPercent` is removed (promote: the newest ready
revision takes all traffic, and KServe records it as rolled out). When it fails, or is not ready within the
timeout, `canaryTrafficPercent` becomes 0 (roll back: all traffic on the revision rolled out before) and DeployError
says why.
"""

from __future__ import annotations

import time
from typing import Any

from components.cluster.deploy import (
    GROUP,
    MODE_ANNOTATION,
    NAMESPACE,
    PLURAL,
    POLL_S,
    READY_TIMEOUT_S,
    SERVERLESS,
    VERSION,
    DeployError,
    apply_inference_service,
    wait_ready,
)
from components.cluster.kube import api_error, custom_objects_api, reaching


def roll_out(obj: dict[str, Any], api: Any = None, timeout_s: float = READY_TIMEOUT_S, poll_s: float = POLL_S) -> str:
    """Apply the InferenceService and see the new model serving, by its mode's rollout; returns one line saying what
    happened. DeployError when it does not come up (after a canary's rollback)."""
    api = api or custom_objects_api()
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    if obj["spec"]["predictor"].get("canaryTrafficPercent") is not None:
        status = canary_rollout(obj, api=api, timeout_s=timeout_s, poll_s=poll_s)
        revision = _predictor(status).get("latestReadyRevision")
        return f"promoted InferenceService {namespace}/{name}: revision {revision} takes all traffic"
    action = apply_inference_service(obj, api=api)
    status = wait_ready(name, namespace, api=api, timeout_s=timeout_s, poll_s=poll_s)
    return f"{action} InferenceService {namespace}/{name}, ready at {status.get('url')}"


def canary_rollout(
    obj: dict[str, Any], api: Any = None, timeout_s: float = READY_TIMEOUT_S, poll_s: float = POLL_S
) -> dict[str, Any]:
    """Apply a Serverless InferenceService with canaryTrafficPercent, wait for its newest revision, then promote it
    (returns the status once it serves all traffic) or roll back and raise DeployError naming why."""
    annotations = obj["metadata"].get("annotations") or {}
    percent = obj["spec"]["predictor"].get("canaryTrafficPercent")
    if annotations.get(MODE_ANNOTATION) != SERVERLESS or percent is None:
        raise DeployError(
            f"a canary rollout needs {MODE_ANNOTATION}: {SERVERLESS} and spec.predictor.canaryTrafficPercent "
            f"(KServe splits traffic between revisions only in Serverless mode), got "
            f"{annotations.get(MODE_ANNOTATION)!r} and {percent!r}"
        )
    api = api or custom_objects_api()
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    action = apply_inference_service(obj, api=api)
    deadline = time.monotonic() + timeout_s
    while True:
        current = _get(api, name, namespace)
        state, why = canary_state(current)
        if state == "ready":
            set_canary_percent(name, namespace, None, api=api)
            return wait_ready(name, namespace, api=api, timeout_s=timeout_s, poll_s=poll_s)
        if state == "pending" and time.monotonic() < deadline:
            time.sleep(poll_s)
            continue
        if state == "pending":
            why = f"not ready after {timeout_s:g} s ({why})"
        revision = _predictor(current.get("status") or {}).get("latestCreatedRevision") or "(none yet)"
        where = f"canary revision {revision} of InferenceService {namespace}/{name}"
        if action == "created":
            # A new service has no earlier revision to hand the traffic back to.
            raise DeployError(f"{where} {why}; nothing to roll back to (the service was just created)")
        set_canary_percent(name, namespace, 0, api=api)
        raise DeployError(f"{where} {why}; rolled back: all traffic is on the previously rolled-out revision")


def canary_state(current: dict[str, Any]) -> tuple[str, str]:
    """("ready" | "failed" | "pending", why) for an InferenceService mid-canary, from its status."""
    status = current.get("status") or {}
    generation = (current.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration", 0) < generation:
        return "pending", "the controller has not observed the new spec yet"
    failed = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "LatestDeploymentReady" and c["status"] == "False"
        ),
        None,
    )
    if failed:
        message = (failed.get("message") or "").strip().splitlines()
        return "failed", f"failed: {failed.get('reason') or 'no reason given'}" + (
            f" ({message[0]})" if message else ""
        )
    predictor = _predictor(status)
    created, ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if not created:
        return "pending", "no revision created yet"
    if ready != created:
        return "pending", f"latest ready revision is {ready or '(none)'}, not {created}"
    serving = [t for t in predictor.get("traffic") or [] if t.get("revisionName") == created and t.get("percent")]
    if not serving:
        return "pending", f"revision {created} is ready but takes no traffic yet"
    return "ready", f"revision {created} is ready and takes {serving[0]['percent']}% of traffic"


def set_canary_percent(name: str, namespace: str = NAMESPACE, percent: int | None = None, api: Any = None) -> None:
    """Set the predictor's canaryTrafficPercent (None removes it: the newest ready revision takes all traffic)."""
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    # The client sends a dict as a JSON merge patch (application/merge-patch+json), where null deletes the field.
    body = {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": name}
    try:
        with reaching(api):
            api.patch_namespaced_custom_object(**where, body=body)
    except ApiException as error:
        raise DeployError(
            f"setting canaryTrafficPercent={percent} on InferenceService {namespace}/{name} failed: {api_error(error)}"
        ) from None


def _get(api: Any, name: str, namespace: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": name}
    try:
        with reaching(api):
            return api.get_namespaced_custom_object(**where)
    except ApiException as error:
        raise DeployError(f"reading InferenceService {namespace}/{name} failed: {api_error(error)}") from None


def _predictor(status: dict[str, Any]) -> dict[str, Any]:
    return (status.get("components") or {}).get("predictor") or {}
