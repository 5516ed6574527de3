"""monitoring.dashboard: the Evidently workspace and project, one snapshot per window, and the Evidently UI
serving it on 127.0.0.1 (started, asked for the project and its series, stopped)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from evidently.ui.workspace import Workspace

from monitoring.dashboard import (
    MAIN_FEATURES,
    PARTIAL_TAG,
    PROJECT_NAME,
    add_window,
    open_project,
    serve_ui,
    sync_windows,
)
from tests.support.traffic import traffic

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return traffic(150, seed=1, end=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, reference) -> Path:
    """A workspace with two windows: one like the reference, one in another language."""
    folder = tmp_path_factory.mktemp("workspace")
    for when, shift, fad in ((NOW - timedelta(hours=1), [], 1.1), (NOW, ["language"], 3.5)):
        current = traffic(60, seed=int(fad * 10), shift=shift, end=when)
        add_window(folder, current, reference, when, {"window_fad": fad, "tempo_adherence": 0.8})
    return folder


def _runs(folder: Path) -> list:
    ws = Workspace(str(folder))
    (project,) = ws.search_project(PROJECT_NAME)
    runs = [ws.get_run(project.id, run_id) for run_id in ws.list_runs(project.id)]
    return sorted(runs, key=lambda run: run.timestamp)


def test_add_window_keeps_one_project_whose_dashboard_shows_drift_quality_and_features(workspace):
    runs = _runs(workspace)
    # Naive UTC: Evidently compares snapshot times with naive datetimes.
    assert [run.timestamp for run in runs] == [datetime(2026, 11, 25, 11, 0), datetime(2026, 11, 25, 12, 0)]
    ws, project = open_project(workspace)  # opening again finds the same project
    assert [p.name for p in ws.list_projects()] == [PROJECT_NAME]
    model = ws.get_dashboard(project.id)
    titles = [panel.title for panel in model.panels]
    for title in ["Share of drifted features", "Window FAD (mel)", "Prompt adherence", *MAIN_FEATURES.values()]:
        assert title in titles
    listed = [panel_id for tab in model.tabs for panel_id in tab.panels]
    assert sorted(map(str, listed)) == sorted(str(panel.id) for panel in model.panels)  # each panel once
    metrics = {value.metric for panel in model.panels for value in panel.values}
    assert "evidently:metric_v2:MusicopsWindowQuality" in metrics


def test_sync_adds_each_aligned_window_once_and_redoes_the_partial_one(tmp_path, reference):
    now = NOW + timedelta(minutes=20)
    log = traffic(100, seed=5, end=now, span=timedelta(minutes=80))  # 10:00 .. 12:20
    added, skipped = sync_windows(tmp_path, log, reference, "1h", min_rows=10, now=now)
    runs = _runs(tmp_path)
    assert len(added) == 2 and skipped == 0
    assert [run.timestamp for run in runs] == [datetime(2026, 11, 25, 12, 0), datetime(2026, 11, 25, 12, 20)]
    assert [PARTIAL_TAG in run.tags for run in runs] == [False, True]

    later = NOW + timedelta(minutes=40)
    more = pd.concat([log, traffic(20, seed=6, end=later, span=timedelta(minutes=20))], ignore_index=True)
    added, _ = sync_windows(tmp_path, more, reference, "1h", min_rows=10, now=later)
    runs = _runs(tmp_path)
    assert len(added) == 1
    assert [run.timestamp for run in runs] == [datetime(2026, 11, 25, 12, 0), datetime(2026, 11, 25, 12, 40)]

    quiet, skipped = sync_windows(tmp_path, more, reference, "1h", min_rows=1000, now=later)
    assert quiet == [] and skipped == 1 and len(_runs(tmp_path)) == 1  # the partial window went, none replaced it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.e2e
def test_the_ui_serves_the_project_and_its_series_on_localhost(workspace):
    port = _free_port()
    with serve_ui(workspace, port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        status, body = _get(f"{server.url}/api/projects")
        assert status == 200
        (project,) = json.loads(body)
        assert project["name"] == PROJECT_NAME
        status, page = _get(f"{server.url}/")
        assert status == 200 and "<html" in page.lower()

        filters = [
            {"tags": [], "metadata": {}, "metric": metric, "metric_labels": labels}
            for metric, labels in [
                ("evidently:metric_v2:MusicopsWindowQuality", {"name": "window_fad"}),
                ("evidently:metric_v2:DriftedColumnsCount", {"value_type": "share"}),
            ]
        ]
        request = urllib.request.Request(
            f"{server.url}/api/v2/snapshots/{project['id']}/data_series_batch",
            data=json.dumps({"series_filter": filters}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            series = {s["metric_type"].rpartition(":")[2]: s["values"] for s in json.loads(response.read())["series"]}
        assert series["MusicopsWindowQuality"] == [1.1, 3.5]
        low, high = series["DriftedColumnsCount"]
        assert low < 0.5 <= high  # the second window's prompts are in another language
    assert server.process.returncode is not None
    with pytest.raises(OSError):
        _get(f"{server.url}/api/version")


def test_serve_ui_refuses_a_port_already_answering(workspace):
    port = _free_port()
    with serve_ui(workspace, port=port), pytest.raises(RuntimeError, match="already answers"):
        serve_ui(workspace, port=port)


def test_cli_ui_adds_the_windows_serves_the_dashboard_and_stops_on_ctrl_c(tmp_path, reference):
    from tests.support.traffic import write_log, write_reference

    reference_dir = write_reference(reference, tmp_path / "built")
    # The dashboard's windows are whole hours: traffic inside the last complete one is one window at any clock time
    # (ending at "now" it was two windows, and this test failed, within minutes after the hour).
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    end = hour - timedelta(minutes=1)
    write_log(traffic(40, seed=7, end=end, span=timedelta(minutes=5)), tmp_path / "requests")
    params = tmp_path / "params.yaml"
    params.write_text(
        f"monitor:\n  log_dir: {tmp_path / 'requests'}\n  workspace: {tmp_path / 'workspace'}\n  min_rows: 10\n"
    )
    port = _free_port()
    # Ctrl-C as a terminal delivers it: a shell that runs the tests in the background (`make test &`) starts
    # them with SIGINT ignored, which children inherit and Python then keeps, so the child restores it.
    restore = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"
    command = [sys.executable, "-c", f"{restore}; from monitoring.cli import app; app()", "ui", "--port", str(port)]
    command += ["--params", str(params), "--reference-dir", str(reference_dir)]
    # Its own process group, so a failing test can stop the Evidently server it started as well.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        lines = []
        for line in process.stdout:  # the URL is printed once the dashboard answers
            lines.append(line)
            if line.startswith("dashboard:"):
                break
        assert lines and lines[-1].startswith(f"dashboard: http://127.0.0.1:{port}"), "".join(lines)
        assert any(line.startswith("1 window(s) added") for line in lines), "".join(lines)
        status, body = _get(f"http://127.0.0.1:{port}/api/projects")
        assert status == 200 and json.loads(body)[0]["name"] == PROJECT_NAME
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with pytest.raises(OSError):  # the Evidently server went with it
        _get(f"http://127.0.0.1:{port}/api/version")
