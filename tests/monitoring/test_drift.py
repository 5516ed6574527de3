"""monitoring.drift and monitoring.quality: Evidently drift reports of synthetic traffic against a reference,
window FAD, adherence, and `musicops monitor report` on a log folder."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from model.frechet import gaussian_stats
from monitoring.cli import app
from monitoring.drift import drift_report
from monitoring.quality import FadReference, adherence, window_fad, window_frames, window_quality
from monitoring.schema import COLUMNS, DRIFT_FEATURES
from tests.support.traffic import mel_frames, traffic, write_log, write_reference

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PROMPT_EMBEDDINGS = [f"prompt_embedding_{i}" for i in range(4)]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return traffic(200, seed=1, end=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def like(reference):
    return drift_report(traffic(120, seed=2, end=NOW), reference)


@pytest.fixture(scope="module")
def language(reference):
    return drift_report(traffic(120, seed=3, shift=["language"], end=NOW), reference, quality={"window_fad": 1.5})


def test_traffic_drawn_like_the_reference_raises_no_alarm(like):
    assert like.rows == 120 and like.reference_rows == 200
    assert set(like.features) == set(DRIFT_FEATURES) and not like.skipped
    # K-S at p < 0.05 on 20 features: a chance drift or two, far from the 0.5 alarm.
    assert like.drift_share <= 0.15
    assert max(like.group_shares().values()) < 0.5


def test_prompts_in_another_language_drift_every_prompt_feature_and_the_report_names_them(language, tmp_path):
    prompt_features = [name for name in DRIFT_FEATURES if name.startswith("prompt_")]
    assert set(prompt_features) <= set(language.drifted)
    assert language.group_shares()["prompt"] == 1.0
    feature = language.features["prompt_non_ascii_share"]
    assert feature.drifted and feature.method and 0 <= feature.score <= feature.threshold

    html, data = language.save(tmp_path / "report")
    page = html.read_text()
    assert "prompt_non_ascii_share" in page and "prompt_embedding_0" in page
    # Real JSON: no NaN or Infinity tokens anywhere (Evidently's own output keeps NaN).
    document = json.loads(data.read_text(), parse_constant=lambda token: pytest.fail(f"{token} in report.json"))
    assert set(document["drifted"]) == set(language.drifted)
    assert document["features"]["prompt_non_ascii_share"]["drifted"] is True
    assert document["quality"] == {"window_fad": 1.5}
    configs = [metric["config"] for metric in document["evidently"]["metrics"]]
    assert {"type": "evidently:metric_v2:MusicopsWindowQuality", "name": "window_fad"} in configs
    drifted_count = next(m for m in document["evidently"]["metrics"] if "DriftedColumnsCount" in m["config"]["type"])
    assert drifted_count["value"]["count"] == len(language.drifted)  # Evidently's count agrees with our verdicts


def test_unseen_genres_move_the_prompt_embeddings(reference):
    result = drift_report(traffic(120, seed=4, shift=["genres"], end=NOW), reference)
    assert set(PROMPT_EMBEDDINGS) <= set(result.drifted)
    assert "prompt_non_ascii_share" not in result.drifted  # still English


def test_louder_brighter_audio_drifts_the_audio_features(reference):
    result = drift_report(traffic(120, seed=5, shift=["audio"], end=NOW), reference)
    assert {"loudness_lufs", "spectral_centroid_hz", "spectral_bandwidth_hz"} <= set(result.drifted)
    assert result.group_shares()["prompt"] < 0.5  # a chance p < 0.05 or two, not a shift


def test_features_without_values_are_skipped_and_missing_columns_named(reference):
    current = traffic(40, seed=6, end=NOW)
    current["tempo_bpm"] = np.nan  # silence everywhere: no tempo to test
    result = drift_report(current, reference, ["tempo_bpm", "loudness_lufs"])
    assert result.skipped == ["tempo_bpm"] and list(result.features) == ["loudness_lufs"]
    with pytest.raises(ValueError, match="loudness_lufs"):
        drift_report(current.drop(columns=["loudness_lufs"]), reference)


def test_window_fad_is_near_zero_for_frames_like_the_reference_and_large_for_shifted_ones():
    stats = gaussian_stats(mel_frames(np.random.default_rng(7), 20_000))
    like = window_fad(traffic(120, seed=8), stats)
    shifted = window_fad(traffic(120, seed=8, shift=["audio"]), stats)
    total_variance = float(np.trace(stats.cov))
    assert like < 0.01 * total_variance
    assert shifted > 1000 * like


def test_window_frames_skip_requests_without_audio():
    rows = traffic(3, seed=9)
    rows.loc[1, "mel_frames"] = None
    assert window_frames(rows).shape == (64, 64)  # two requests of 32 frames
    with pytest.raises(ValueError, match="at least 2"):
        window_fad(rows.iloc[[1]], gaussian_stats(mel_frames(np.random.default_rng(0), 10)))


def test_adherence_counts_shares_and_key_scores_on_crafted_rows():
    rows = pd.DataFrame(
        {
            # 120 -> 121 is within 4 %; 100 -> 150 is not; 100 -> 200 is the double; no audio tempo is a miss.
            "prompt_tempo_bpm": [120.0, 100.0, None, 100.0, 90.0],
            "tempo_bpm": [121.0, 150.0, 80.0, 200.0, None],
            # same key 1, a fifth 0.5, no key named (not counted), relative 0.3, no audio key 0.
            "prompt_key": ["D minor", "C major", None, "A minor", "F major"],
            "audio_key": ["D minor", "G major", "E major", "C major", None],
        }
    )
    result = adherence(rows)
    assert (result.tempo_prompts, result.tempo_matched) == (4, 2)
    assert result.tempo_share == 0.5
    assert (result.key_prompts, result.key_matched) == (4, 1)
    assert result.key_share == 0.25 and result.key_score == pytest.approx((1 + 0.5 + 0.3 + 0) / 4)
    empty = adherence(rows.iloc[[2]])
    assert empty.tempo_share is None and empty.key_share is None and empty.key_score is None


def test_window_quality_reports_fad_ratio_and_leaves_out_what_is_undefined():
    rng = np.random.default_rng(10)
    fad = FadReference(gaussian_stats(mel_frames(rng, 4000)), evaluation_fad=2.0)
    rows = traffic(60, seed=11)
    values = window_quality(rows, fad)
    assert values["fad_ratio"] == pytest.approx(values["window_fad"] / 2.0)
    assert values["evaluation_fad"] == 2.0 and values["tempo_prompts"] > 0
    no_prompts = rows.assign(prompt_tempo_bpm=np.nan, prompt_key=None, mel_frames=None)
    assert set(window_quality(no_prompts, fad)) == {"tempo_prompts", "key_prompts"}


def _params(tmp_path: Path, **monitor) -> Path:
    settings = {"log_dir": str(tmp_path / "requests"), "reference": str(tmp_path / "evaluation"), **monitor}
    path = tmp_path / "params.yaml"
    path.write_text("monitor:\n" + "".join(f"  {key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def test_cli_report_writes_html_and_json_and_prints_the_drifted_features(tmp_path, reference):
    reference_dir = write_reference(reference, tmp_path / "built")
    now = datetime.now(UTC)
    write_log(traffic(60, seed=12, shift=["audio"], end=now, span=timedelta(minutes=20)), tmp_path / "requests")
    out = tmp_path / "report"
    args = ["report", "--params", str(_params(tmp_path)), "--reference-dir", str(reference_dir), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output
    assert "60 requests" in result.output and "loudness_lufs" in result.output
    document = json.loads((out / "report.json").read_text())
    assert "loudness_lufs" in document["drifted"]
    assert document["quality"]["window_fad"] > 10 * document["quality"]["evaluation_fad"]
    assert math.isfinite(document["quality"]["fad_ratio"])


def test_cli_report_says_what_is_missing(tmp_path, reference):
    params = _params(tmp_path)
    reference_dir = write_reference(reference, tmp_path / "built")
    result = CliRunner().invoke(app, ["report", "--params", str(params), "--reference-dir", str(reference_dir)])
    assert result.exit_code == 2
    assert f"no request log in {tmp_path / 'requests'}: serve some traffic first (`musicops serve`)" in result.output

    result = CliRunner().invoke(app, ["report", "--params", str(params), "--reference-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no evaluation in" in result.output and "run the evaluate stage first" in result.output

    old = traffic(40, seed=13, end=datetime.now(UTC) - timedelta(days=2))
    write_log(old, tmp_path / "requests")
    result = CliRunner().invoke(app, ["report", "--params", str(params), "--reference-dir", str(reference_dir)])
    assert result.exit_code == 2 and "no requests in the last 1h" in result.output


def test_every_schema_column_is_in_the_synthetic_traffic():
    assert list(traffic(2).columns) == list(COLUMNS)
