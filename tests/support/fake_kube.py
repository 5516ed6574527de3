"""A stand-in for the Kubernetes custom objects API: records calls, answers `get` from a script."""

from __future__ import annotations

from typing import Any


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
