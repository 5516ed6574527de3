"""A drift starts a retraining only when there is data the promoted model has not seen; then the retraining
fine-tunes the promoted model. Otherwise the check says so, and what to add."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from model.checkpoint import CARD_FILE
from monitoring.cli import app
from monitoring.trigger import check, retrain_command
from settings import paths
from settings.data_sources import source_digests
from tests.support.traffic import traffic, write_log, write_reference

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Launcher:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, kind: str, kfp_host: str | None) -> str:
        self.calls.append(kind)
        return f"{kind} started"


@pytest.fixture(scope="module")
def reference():
    return traffic(150, seed=1, end=NOW)


def test_a_drift_with_no_new_data_starts_nothing_and_says_what_to_add(reference, tmp_path):
    launcher, state = Launcher(), tmp_path / "state.json"
    window = traffic(80, seed=4, shift=["genres"], end=NOW)
    result = check(window, reference, now=NOW, max_drift_share=0.4, launcher=launcher, state_file=state, unseen=[])
    assert result.verdict == "drift" and result.exit_code == 1
    assert result.retraining == "no new data" and launcher.calls == [] and not state.exists()
    assert "musicops data add FOLDER --captions FILE" in result.detail
    assert "retraining no new data (the promoted model has seen all the data" in result.line()
    assert result.explanation  # what drifted is still said: it is what to record


def test_a_drift_with_new_data_fine_tunes_the_promoted_model(reference, tmp_path):
    launcher = Launcher()
    window = traffic(80, seed=4, shift=["genres"], end=NOW)
    result = check(window, reference, now=NOW, max_drift_share=0.4, launcher=launcher, unseen=["polka"])
    assert result.retraining == "started" and launcher.calls == ["dvc"]
    assert result.detail == "dvc started on new data: polka"
    dry = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=["polka"])
    assert dry.detail == "would run dvc exp run -S train.init_from=promoted on new data: polka"
    no_promoted = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=None)
    assert no_promoted.detail == "would run dvc repro"  # nothing promoted to start from: params.yaml's start


@pytest.mark.unit
def test_the_fine_tuning_command_is_a_dvc_experiment_from_the_promoted_model():
    command, shown = retrain_command("dvc", fine_tune=True)
    assert command == [sys.executable, "-m", "dvc", "exp", "run", "-S", "train.init_from=promoted"]
    assert shown == "dvc exp run -S train.init_from=promoted"


def test_the_unseen_sources_are_asked_for_only_on_drift(reference):
    # Digesting the data sources reads every audio byte: a check with no verdict or no drift must not ask.
    asked: list[int] = []

    def unseen() -> list[str]:
        asked.append(1)
        return ["polka"]

    few = check(traffic(10, seed=5, end=NOW), reference, now=NOW, min_rows=30, dry_run=True, unseen=unseen)
    ok = check(traffic(80, seed=4, end=NOW), reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=unseen)
    assert few.verdict == "no data" and ok.verdict == "ok" and asked == []
    window = traffic(80, seed=4, shift=["genres"], end=NOW)
    drift = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=unseen)
    assert asked == [1]  # once, and its answer is the one a sequence would give
    assert drift.detail == "would run dvc exp run -S train.init_from=promoted on new data: polka"
    seen = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=lambda: [])
    assert seen.retraining == "no new data"
    none = check(window, reference, now=NOW, max_drift_share=0.4, dry_run=True, unseen=lambda: None)
    assert none.detail == "would run dvc repro"


def _repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: pd.DataFrame, window: pd.DataFrame
) -> tuple[Path, list[str]]:
    """A promoted model that has seen the data source polka, params naming it, `reference` built and `window` in
    the request log: the params file and the `monitor check` arguments (a dry run, no dashboard)."""
    monkeypatch.chdir(tmp_path)  # the promoted model and the data sources are where the repository keeps them
    source = paths.DATA_SOURCES / "polka"
    source.mkdir(parents=True)
    (source / "captions.csv").write_text("file,caption\na.wav,a polka with accordion\n")
    (source / "a.wav").write_bytes(b"RIFF")
    promoted = paths.PROMOTED / "model"
    promoted.mkdir(parents=True)
    (promoted / "config.json").write_text("{}")
    (promoted / CARD_FILE).write_text(json.dumps({"data_sources": source_digests(["polka"])}))
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data:\n  sources: [polka]\nmonitor:\n  log_dir: {tmp_path / 'requests'}\n  min_rows: 20\n  window: 30m\n"
    )
    write_log(window, tmp_path / "requests")
    built = write_reference(reference, tmp_path / "built")
    return params, ["check", "--params", str(params), "--reference-dir", str(built), "--dry-run", "--no-dashboard"]


def _recent(n: int, seed: int, shift: list[str] | None = None) -> pd.DataFrame:
    return traffic(n, seed=seed, shift=shift or [], end=datetime.now(UTC), span=timedelta(minutes=20))


def test_cli_check_compares_the_data_sources_with_the_promoted_models_card(tmp_path, reference, monkeypatch):
    params, args = _repository(tmp_path, monkeypatch, reference, _recent(60, seed=13, shift=["language"]))

    seen = CliRunner().invoke(app, args)
    assert seen.exit_code == 1 and "retraining no new data" in seen.output, seen.output
    (paths.DATA_SOURCES / "polka" / "b.wav").write_bytes(b"RIFF, a new take")
    new = CliRunner().invoke(app, args)
    assert new.exit_code == 1, new.output
    assert "would run dvc exp run -S train.init_from=promoted on new data: polka" in new.output

    params.write_text(params.read_text().replace("[polka]", "[gamelan]"))
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "data/sources/gamelan does not exist" in missing.output


def test_cli_check_digests_the_data_sources_only_on_drift(tmp_path, reference, monkeypatch):
    # A missing data source is noticed only when a retraining is decided: a scheduled check of quiet traffic
    # does not read the (possibly gigabytes of) data sources at all.
    params, args = _repository(tmp_path, monkeypatch, reference, _recent(60, seed=4))
    params.write_text(params.read_text().replace("[polka]", "[gamelan]"))
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0 and ok.output.startswith("ok: 60 requests"), ok.output

    write_log(_recent(5, seed=5), tmp_path / "few")
    few = CliRunner().invoke(app, [*args, "--log-dir", str(tmp_path / "few")])
    assert few.exit_code == 0 and few.output.startswith("no data: 5 requests"), few.output

    write_log(_recent(60, seed=13, shift=["language"]), tmp_path / "drift")
    drift = CliRunner().invoke(app, [*args, "--log-dir", str(tmp_path / "drift")])
    assert drift.exit_code == 2, drift.output
    assert "error: " in drift.output and "data/sources/gamelan does not exist" in drift.output
    assert "musicops data add" in drift.output  # the same clear error as before, said when the digest is taken


def test_cli_check_digests_once_and_fine_tunes_from_that_answer(tmp_path, reference, monkeypatch):
    _, args = _repository(tmp_path, monkeypatch, reference, _recent(60, seed=13, shift=["language"]))
    (paths.DATA_SOURCES / "polka" / "b.wav").write_bytes(b"RIFF, a new take")
    digests: list[list[str]] = []

    def counting(names: list[str]) -> dict[str, str]:
        digests.append(list(names))
        return source_digests(names)

    started: list[tuple[str, bool]] = []

    def start(kind: str, kfp_host: str | None = None, **options: object) -> str:
        started.append((kind, bool(options["fine_tune"])))
        return f"{kind} started"

    monkeypatch.setattr("settings.data_sources.source_digests", counting)
    monkeypatch.setattr("monitoring.trigger.start_retraining", start)
    args = [arg for arg in args if arg != "--dry-run"] + ["--state", str(tmp_path / "state.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "retraining started (dvc started on new data: polka)" in result.output
    assert digests == [["polka"]] and started == [("dvc", True)]
