"""The monitoring dashboard: an Evidently 0.7 local workspace holding one project, "musicops", with one snapshot
per window of served traffic, and the Evidently UI that plots them over time.

Each snapshot is a drift report (monitoring.drift) of one window against the reference, timed at the window's
end. The dashboard's panels read values out of the snapshots: the share of drifted features
(`DriftedColumnsCount`), per-feature means (`MeanValue`, from the DataSummaryPreset), the request count
(`RowCount`), and the window's quality values: FAD and adherence, carried by monitoring.quality's
`WindowQuality` metric, which the UI plots like any built-in metric without importing this project.

Windows are aligned to multiples of their length (1h windows start on the hour, UTC), so syncing twice adds
each window once. The window still in progress is added too, tagged "partial", and replaced at the next sync.
Times on the dashboard are UTC.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel
from evidently.ui.workspace import Project, Workspace

from monitoring.drift import drift_report
from monitoring.quality import FadReference, window_quality
from monitoring.schema import DRIFT_FEATURES
from monitoring.trigger import parse_duration, read_window

PROJECT_NAME = "musicops"
PARTIAL_TAG = "partial"  # the window still in progress when it was added
# The features the dashboard follows over time (mean per window), with their panel titles.
MAIN_FEATURES = {
    "loudness_lufs": "Mean loudness (LUFS)",
    "spectral_centroid_hz": "Mean spectral centroid (Hz)",
    "tempo_bpm": "Mean tempo (BPM)",
    "prompt_chars": "Mean prompt length (characters)",
    "silence_share": "Mean share of silent frames",
}
_QUALITY = "MusicopsWindowQuality"  # monitoring.quality.WindowQuality's type alias


def _quality(name: str, legend: str) -> PanelMetric:
    return PanelMetric(legend=legend, metric=_QUALITY, metric_labels={"name": name})


def _drift_share() -> PanelMetric:
    return PanelMetric(legend="drifted share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})


def dashboard_model() -> DashboardModel:
    """The project's dashboard: drift share beside window FAD and adherence, then the main features over time."""
    overview = [
        counter_panel("Share of drifted features", [_drift_share()], "Last window", size="half"),
        counter_panel("Window FAD / evaluation FAD", [_quality("fad_ratio", "ratio")], "Last window", size="half"),
        line_plot_panel("Share of drifted features", [_drift_share()], "Per window (UTC)", size="half"),
        line_plot_panel(
            "Window FAD (mel)",
            [_quality("window_fad", "served traffic"), _quality("evaluation_fad", "evaluated model")],
            "Against the real held-out audio",
            size="half",
        ),
        line_plot_panel(
            "Prompt adherence",
            [
                _quality("tempo_adherence", "tempo matched"),
                _quality("key_adherence", "key matched"),
                _quality("key_score", "key score (MIREX)"),
            ],
            "Requests whose prompt names a tempo or key",
            size="half",
        ),
        bar_plot_panel(
            "Requests",
            [
                PanelMetric(legend="all", metric="RowCount"),
                _quality("tempo_prompts", "naming a tempo"),
                _quality("key_prompts", "naming a key"),
            ],
            "Per window",
            size="half",
        ),
    ]
    features = [
        line_plot_panel(
            title, [PanelMetric(legend=name, metric="MeanValue", metric_labels={"column": name})], size="half"
        )
        for name, title in MAIN_FEATURES.items()
    ]
    tabs = [("Drift and quality", overview), ("Features", features)]
    return DashboardModel(
        tabs=[DashboardTabModel(title=title, panels=[panel.id for panel in panels]) for title, panels in tabs],
        panels=[panel for _, panels in tabs for panel in panels],
    )


def open_project(workspace: str | Path) -> tuple[Workspace, Project]:
    """The workspace (created if missing) and its "musicops" project, whose dashboard is (re)written as
    `dashboard_model` says, so panels follow this code."""
    Path(workspace).mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(workspace))
    found = ws.search_project(PROJECT_NAME)
    project = found[0] if found else ws.create_project(PROJECT_NAME, "Served traffic against the evaluation")
    # Saved whole rather than panel by panel: 0.7.23's add_panel lists a panel twice in an existing tab.
    ws.save_dashboard(project.id, dashboard_model())
    return ws, project


def _naive_utc(moment: datetime) -> datetime:
    # Evidently orders snapshots by timestamp and compares them with naive times: keep every one naive UTC.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def add_window(
    workspace: str | Path,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    when: datetime,
    quality: dict[str, float] | None = None,
    features: Sequence[str] = DRIFT_FEATURES,
    tags: Sequence[str] = (),
) -> str:
    """Add one window's drift report (with its quality values) to the workspace, timed `when`; return its id."""
    ws, project = open_project(workspace)
    result = drift_report(current, reference, features, quality=quality, when=_naive_utc(when), tags=tags)
    return str(ws.add_run(project.id, result.snapshot).id)


def sync_windows(
    workspace: str | Path,
    log: str | Path | pd.DataFrame,
    reference: pd.DataFrame,
    window: str | timedelta = "1h",
    *,
    min_rows: int = 30,
    fad: FadReference | None = None,
    now: datetime | None = None,
    max_windows: int = 48,
) -> tuple[list[str], int]:
    """Add the windows of `log` not in the workspace yet (at most the last `max_windows`, each with at least
    `min_rows` requests); return the added snapshot ids and how many windows were skipped for too few rows."""
    span = parse_duration(window)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ws, project = open_project(workspace)
    latest = None
    for run_id in ws.list_runs(project.id):
        run = ws.get_run(project.id, run_id)
        if run is None:
            continue
        if PARTIAL_TAG in run.tags:  # redone below with the traffic that arrived since
            ws.delete_run(project.id, run_id)
        elif latest is None or run.timestamp > latest:
            latest = run.timestamp
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + span * ((now - span * (max_windows - 1) - epoch) // span)
    if latest is not None:
        first = max(first, latest.replace(tzinfo=UTC))  # a complete window's snapshot is timed at its end
    frame = read_window(log, first, now)
    added, skipped = [], 0
    start = first
    while start < now:
        end = start + span
        rows = read_window(frame, start, end)
        if len(rows) < min_rows:
            skipped += len(rows) > 0
        else:
            partial = end > now
            when, tags = (now, [PARTIAL_TAG]) if partial else (end, [])
            added.append(add_window(workspace, rows, reference, when, window_quality(rows, fad), tags=tags))
        start = end
    return added, skipped


class UIServer:
    """A running `evidently ui` process serving a workspace; stop() (or leaving a `with` block) ends it."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> UIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serve_ui(workspace: str | Path, port: int = 8001, host: str = "127.0.0.1", timeout: float = 120.0) -> UIServer:
    """Start the Evidently UI on `workspace` and return once it answers (RuntimeError if it exits or does not
    answer within `timeout` seconds). Evidently's usage telemetry is switched off for it."""
    Path(workspace).mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    if _answers(url):
        raise RuntimeError(f"something already answers on {url}: choose another port (--port)")
    env = {**os.environ, "DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    command = [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(workspace)]
    command += ["--host", host, "--port", str(port)]
    # Output to a file, not a pipe: nobody reads a pipe while the server runs, and a full one would block it.
    handle, name = tempfile.mkstemp(prefix="evidently-ui-", suffix=".log")
    with os.fdopen(handle, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    server = UIServer(process, url, Path(name))
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace").strip().splitlines()[-3:]
            server.stop()
            why = "exited" if process.returncode is not None else f"did not answer within {timeout:g} s"
            raise RuntimeError(f"the Evidently UI {why}: {' | '.join(tail) or 'no output'}")
        time.sleep(0.25)
    return server
