"""`submit` and `schedule` through the real kfp.Client against a stand-in Kubeflow Pipelines API on 127.0.0.1
(the v2beta1 routes the client calls), checking what reaches the server: the compiled pipeline, the run's
parameters, the cron trigger."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.compile import COMPILED_DIR
from pipelines.retrain import PIPELINE_NAME
from pipelines.submit import schedule, submit

pytestmark = pytest.mark.integration
PACKAGE = COMPILED_DIR / f"{PIPELINE_NAME}.yaml"


class _Api(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict]]

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._answer({"experiments": [{"experiment_id": "exp-1", "display_name": "musicops"}]})
        return self._answer({})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.calls.append(("POST", self.path, body))
        ids = {"runs": {"run_id": "run-1"}, "recurringruns": {"recurring_run_id": "rec-1"}}
        return self._answer(ids.get(self.path.rsplit("/", 1)[-1], {"experiment_id": "exp-1"}))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    handler = type("Api", (_Api,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.calls
    server.shutdown()
    server.server_close()


def _posted(calls: list, route: str) -> dict:
    (body,) = [body for method, path, body in calls if method == "POST" and path == route]
    return body


def test_submit_sends_the_compiled_pipeline_with_the_run_parameters(api):
    host, calls = api
    result = submit(host, PACKAGE, {"preset": "small", "nodes": 4}, experiment="musicops")
    assert result.id == "run-1" and result.url.endswith("/#/runs/details/run-1")
    run = _posted(calls, "/apis/v2beta1/runs")
    # The spec travels with its platform part (node selectors, volumes) beside it.
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == PIPELINE_NAME
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
    assert run["runtime_config"]["parameters"] == {"preset": "small", "nodes": 4}
    assert run["experiment_id"] == "exp-1"


def test_schedule_creates_one_recurring_run_on_six_field_cron(api):
    host, calls = api
    result = schedule(host, PACKAGE, "0 3 * * 1", {}, name="weekly")
    assert result.id == "rec-1"
    recurring = _posted(calls, "/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(recurring["max_concurrency"]) == 1  # int64 travels as a JSON string
    assert recurring["no_catchup"] is True and recurring["display_name"] == "weekly"
    assert recurring["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == PIPELINE_NAME


def test_a_host_that_answers_errors_is_named(tmp_path: Path):
    from pipelines.submit import PipelineHostError, check_host

    with pytest.raises(PipelineHostError, match="http\\(s\\) URL"):
        check_host("localhost:8080")
