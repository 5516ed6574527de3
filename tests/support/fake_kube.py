"""Stand-ins for the Kubernetes custom objects API: `FakeApi` records calls and answers `get` from a script;
`FakeKServe` holds an InferenceService and moves its status as KServe's controller would."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException


class FakeApi:
    """get/create/replace_namespaced_custom_object recording calls; `get` answers from a script in turn (the last
    answer repeats), an exception in the script is raised."""

    def __init__(self, *answers: Any):
        self.answers, self.calls = list(answers), []

    def get_namespaced_custom_object(self, **where: Any) -> Any:
        self.calls.append(("get", where))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def create_namespaced_custom_object(self, **where: Any) -> dict:
        self.calls.append(("create", where))
        return where["body"]

    def replace_namespaced_custom_object(self, **where: Any) -> dict:
        self.calls.append(("replace", where))
        return where["body"]


class FakeKServe:
    """An API server holding one InferenceService whose status moves as KServe's controller moves it in Serverless
    mode (and, for the Ready condition, in Standard mode too).

    Every create, replace or patch bumps `metadata.generation`; a change of the predictor other than
    canaryTrafficPercent creates a revision (`<name>-predictor-0000N`). Each `get` is one step of the controller: the
    first after a change still reports the previous observedGeneration; from `ready_after` steps on a healthy revision
    is ready. An unhealthy one never is, and from `fail_after` steps (None: never) reports LatestDeploymentReady False,
    as Knative does once it gives a revision up. Traffic follows KServe: a new service's first ready revision takes
    all of it; a ready canary takes canaryTrafficPercent and the revision rolled out before the rest; without the
    field the newest ready revision takes all and becomes the rolled-out one; a canary that is not ready takes none.
    """

    def __init__(
        self,
        existing: dict[str, Any] | None = None,
        healthy: bool = True,
        ready_after: int = 2,
        fail_after: int | None = None,
    ):
        self.healthy, self.ready_after, self.fail_after = healthy, ready_after, fail_after
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.traffic_seen: list[list[tuple[str, int]]] = []  # (revision, percent) of every status handed out
        self.obj: dict[str, Any] | None = None
        self.revisions, self.created, self.ready, self.rolled_out = 0, None, None, None
        self.steps, self.observed, self.revision_spec = 0, 0, None
        if existing is not None:
            self._store(copy.deepcopy(existing))
            self.ready = self.rolled_out = self.created  # serving before the test starts
            self.steps, self.observed = ready_after, self.obj["metadata"]["generation"]

    # -- the custom objects API ----------------------------------------------------------------------------------------

    def get_namespaced_custom_object(self, **where: Any) -> dict[str, Any]:
        self.calls.append(("get", where))
        if self.obj is None or where["name"] != self.obj["metadata"]["name"]:
            raise ApiException(status=404, reason="Not Found")
        self._step()
        current = copy.deepcopy(self.obj)
        current["status"] = self._status()
        predictor = current["status"]["components"]["predictor"]
        self.traffic_seen.append([(t["revisionName"], t["percent"]) for t in predictor["traffic"]])
        return current

    def create_namespaced_custom_object(self, **where: Any) -> dict[str, Any]:
        self.calls.append(("create", where))
        self._store(copy.deepcopy(where["body"]))
        return where["body"]

    def replace_namespaced_custom_object(self, **where: Any) -> dict[str, Any]:
        self.calls.append(("replace", where))
        assert where["body"]["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self._store(copy.deepcopy(where["body"]), generation=self.obj["metadata"]["generation"])
        return where["body"]

    def patch_namespaced_custom_object(self, **where: Any) -> dict[str, Any]:
        self.calls.append(("patch", where))
        self._store(_merge_patch(copy.deepcopy(self.obj), where["body"]), generation=self.obj["metadata"]["generation"])
        return self.obj

    # -- the controller ------------------------------------------------------------------------------------------------

    def _store(self, obj: dict[str, Any], generation: int = 0) -> None:
        obj["metadata"]["generation"] = generation + 1
        obj["metadata"]["resourceVersion"] = str(1000 + generation + 1)
        self.obj = obj
        revision_spec = {k: v for k, v in obj["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
        if revision_spec != self.revision_spec:
            self.revision_spec, self.revisions = revision_spec, self.revisions + 1
            self.created = f"{obj['metadata']['name']}-predictor-{self.revisions:05d}"
            self.steps = 0

    def _step(self) -> None:
        self.steps += 1
        if self.steps > 1:  # the first look after a change still shows the previous generation's status
            self.observed = self.obj["metadata"]["generation"]
        if self.healthy and self.steps >= self.ready_after:
            self.ready = self.created
        percent = self.obj["spec"]["predictor"].get("canaryTrafficPercent")
        if self.ready == self.created and (percent is None or self.rolled_out is None):
            self.rolled_out = self.ready

    def _failed(self) -> bool:
        return not self.healthy and self.fail_after is not None and self.steps >= self.fail_after

    def _traffic(self) -> list[dict[str, Any]]:
        percent = self.obj["spec"]["predictor"].get("canaryTrafficPercent")
        if self.rolled_out is None:
            return []
        if self.ready == self.created != self.rolled_out and percent is not None:
            return [
                {"tag": "prev", "revisionName": self.rolled_out, "percent": 100 - percent, "latestRevision": False},
                {"tag": "latest", "revisionName": self.created, "percent": percent, "latestRevision": True},
            ]
        return (
            [{"tag": "prev", "revisionName": self.rolled_out, "percent": 100, "latestRevision": False}]
            if (self.rolled_out != self.created)
            else [{"tag": "latest", "revisionName": self.created, "percent": 100, "latestRevision": True}]
        )

    def _status(self) -> dict[str, Any]:
        latest_ready = self.ready == self.created
        deployment = "True" if latest_ready else "False" if self._failed() else "Unknown"
        message = (
            f"Revision {self.created} failed with message: back-off restarting failed container"
            if self._failed()
            else ""
        )
        conditions = [
            {
                "type": "LatestDeploymentReady",
                "status": deployment,
                "reason": "RevisionFailed" if self._failed() else "",
                "message": message,
            },
            {"type": "Ready", "status": "True" if latest_ready else deployment, "reason": "", "message": message},
        ]
        return {
            "observedGeneration": self.observed,
            "url": f"http://{self.obj['metadata']['name']}.{self.obj['metadata']['namespace']}.example.com",
            "conditions": conditions,
            "components": {
                "predictor": {
                    "latestCreatedRevision": self.created,
                    "latestReadyRevision": self.ready,
                    "latestRolledoutRevision": self.rolled_out,
                    "traffic": self._traffic(),
                }
            },
        }


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    target = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target
