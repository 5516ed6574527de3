"""monitoring.trigger: the drift check's verdicts, the retraining it starts through an injected launcher, the
cool-down, and `musicops monitor check` on a log folder."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from model.frechet import frechet_distance, gaussian_stats
from monitoring.cli import app
from monitoring.quality import FadReference
from monitoring.trigger import RetrainError, check, parse_duration, read_window, retrain_command
from tests.support.traffic import mel_frames, traffic, write_log, write_reference

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Launcher:
    """Records the retrainings a check starts instead of running them."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail = fail

    def __call__(self, kind: str, kfp_host: str | None) -> str:
        self.calls.append((kind, kfp_host))
        if self.fail:
            raise RetrainError("no pipelines API at http://nowhere")
        return f"{kind} started"


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return traffic(200, seed=1, end=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def fad() -> FadReference:
    rng = np.random.default_rng(3)
    real = gaussian_stats(mel_frames(rng, 4000))
    return FadReference(real, frechet_distance(gaussian_stats(mel_frames(rng, 4000, shift=0.1)), real))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(minutes=90)),
        (" 90S ", timedelta(seconds=90)),
        ("1w", timedelta(weeks=1)),
        ("45", timedelta(seconds=45)),
        (timedelta(hours=3), timedelta(hours=3)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1x", "1h junk", "0m", "-1h"])
def test_parse_duration_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_read_window_takes_the_window_from_a_log_folder(tmp_path):
    frame = traffic(30, seed=2, end=NOW, span=timedelta(hours=3))
    write_log(frame, tmp_path / "requests")
    window = read_window(tmp_path / "requests", NOW - timedelta(hours=1), NOW)
    times = pd.to_datetime(frame["time"], utc=True)
    assert len(window) == int((times >= NOW - timedelta(hours=1)).sum()) > 0
    assert len(read_window(frame, NOW - timedelta(hours=1), NOW)) == len(window)
    with pytest.raises(FileNotFoundError, match="serve some traffic first"):
        read_window(tmp_path / "missing", NOW - timedelta(hours=1), NOW)


def test_traffic_like_the_reference_is_ok_and_starts_nothing(reference, fad, tmp_path):
    launcher = Launcher()
    result = check(traffic(80, seed=4, end=NOW), reference, fad_reference=fad, now=NOW, launcher=launcher)
    assert result.verdict == "ok" and result.exit_code == 0 and not result.reasons
    assert result.retraining == "not needed" and not launcher.calls
    assert result.fad_ratio is not None and result.fad_ratio < 2.0
    assert result.line().startswith("ok: 80 requests in the last 1h; drift share")


def test_too_few_requests_give_no_verdict(reference):
    launcher = Launcher()
    result = check(traffic(10, seed=5, end=NOW), reference, min_rows=30, now=NOW, launcher=launcher)
    assert result.verdict == "no data" and result.exit_code == 0 and result.rows == 10
    assert result.drift_share is None and not launcher.calls
    assert "fewer than 30 requests" in result.line()


def test_drift_fires_once_within_the_cooldown_and_again_after_it(reference, tmp_path):
    state = tmp_path / "state.json"
    launcher = Launcher()
    settings = dict(state_file=state, cooldown="24h", retrain="kfp", kfp_host="http://kfp", launcher=launcher)

    first = check(traffic(80, seed=6, shift=["language"], end=NOW), reference, now=NOW, **settings)
    assert first.verdict == "drift" and first.exit_code == 1
    assert first.retraining == "started" and first.detail == "kfp started"
    assert launcher.calls == [("kfp", "http://kfp")]
    assert any(reason.startswith("prompt features drifted 1.00 >= 0.5") for reason in first.reasons)
    assert "prompt_non_ascii_share" in first.line() and "retraining started" in first.line()
    saved = json.loads(state.read_text())
    assert saved["signature"] == ["prompt"] and datetime.fromisoformat(saved["time"]) == NOW

    later = NOW + timedelta(hours=5)
    second = check(traffic(80, seed=7, shift=["language"], end=later), reference, now=later, **settings)
    assert second.verdict == "drift" and second.retraining == "held back"
    assert "cool-down until 2026-11-26T12:00" in second.detail
    assert len(launcher.calls) == 1

    after = NOW + timedelta(hours=25)
    third = check(traffic(80, seed=8, shift=["language"], end=after), reference, now=after, **settings)
    assert third.retraining == "started" and len(launcher.calls) == 2
    assert datetime.fromisoformat(json.loads(state.read_text())["time"]) == after


def test_a_new_kind_of_drift_is_not_held_back_by_the_last_ones_cooldown(reference, fad, tmp_path):
    state = tmp_path / "state.json"
    launcher = Launcher()
    settings = dict(state_file=state, fad_reference=fad, launcher=launcher)
    check(traffic(80, seed=9, shift=["language"], end=NOW), reference, now=NOW, **settings)
    later = NOW + timedelta(hours=1)
    louder = check(traffic(80, seed=10, shift=["audio"], end=later), reference, now=later, **settings)
    assert louder.verdict == "drift" and louder.retraining == "started" and len(launcher.calls) == 2
    assert "fad" in louder.signature
    assert any(reason.startswith("window FAD") and "x the evaluation's" in reason for reason in louder.reasons)
    assert louder.fad_ratio > 2.0
    assert louder.group_shares["audio"] >= 0.4  # louder, brighter, clipped: the audio features see it too
    assert json.loads(state.read_text())["signature"] == ["audio", "fad", "prompt"]  # all three cool down now
    again = NOW + timedelta(hours=2)
    held = check(traffic(80, seed=14, shift=["language"], end=again), reference, now=again, **settings)
    assert held.retraining == "held back" and len(launcher.calls) == 2


def test_dry_run_and_failed_launches_leave_no_state(reference, tmp_path):
    state = tmp_path / "state.json"
    shifted = traffic(80, seed=11, shift=["language"], end=NOW)
    dry = check(shifted, reference, now=NOW, state_file=state, dry_run=True, launcher=Launcher())
    assert dry.retraining == "dry run" and dry.detail == "would run dvc repro" and not state.exists()

    failing = Launcher(fail=True)
    failed = check(shifted, reference, now=NOW, state_file=state, launcher=failing)
    assert failed.retraining == "failed" and "no pipelines API" in failed.detail and not state.exists()
    assert failed.exit_code == 1


def test_retrain_commands_run_dvc_or_submit_through_the_musicops_cli():
    command, shown = retrain_command("dvc")
    assert command == [sys.executable, "-m", "dvc", "repro"] and shown == "dvc repro"
    command, shown = retrain_command("kfp", "http://kfp:8080")
    assert command[1:] == ["-m", "musicops.cli", "pipeline", "submit", "--host", "http://kfp:8080"]
    assert shown == "musicops pipeline submit --host http://kfp:8080"
    with pytest.raises(RetrainError, match="kfp_host"):
        retrain_command("kfp")
    with pytest.raises(RetrainError, match="unknown"):
        retrain_command("airflow")


def test_cli_check_prints_one_line_and_exits_by_verdict(tmp_path, reference, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no promoted model here: any drift may retrain (tests/monitoring/test_new_data.py)
    reference_dir = write_reference(reference, tmp_path / "built")
    params = tmp_path / "params.yaml"
    params.write_text(
        f"monitor:\n  log_dir: {tmp_path / 'requests'}\n  min_rows: 20\n  window: 30m\n"
        f"  workspace: {tmp_path / 'workspace'}\n"
    )
    state = tmp_path / "state.json"
    args = ["check", "--params", str(params), "--reference-dir", str(reference_dir), "--state", str(state)]
    runner = CliRunner()

    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "no request log in" in missing.output and "musicops serve" in missing.output

    now = datetime.now(UTC)
    write_log(traffic(40, seed=12, end=now, span=timedelta(minutes=20)), tmp_path / "requests")
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    verdict, dashboard = ok.output.strip().splitlines()  # the verdict, then the dashboard's new windows
    assert verdict.startswith("ok: 40 requests in the last 30m")
    assert dashboard.endswith(f"added to the dashboard in {tmp_path / 'workspace'}")

    shifted = traffic(40, seed=13, shift=["language"], end=now, span=timedelta(minutes=20))
    write_log(shifted, tmp_path / "requests")  # a second batch of part files
    drift = runner.invoke(app, [*args, "--dry-run"])
    assert drift.exit_code == 1, drift.output
    assert drift.output.startswith("drift: 80 requests in the last 30m")
    assert "retraining dry run (would run dvc repro)" in drift.output and not state.exists()
    # What drifted, in words: the Russian prompts' words, and the prompt features that moved
    assert "\n  prompts: words frequent here and rare in the reference: '" in drift.output
    assert "\n  prompt features: " in drift.output and "non-ASCII letters in prompts" in drift.output
