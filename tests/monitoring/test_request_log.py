"""The request log: part files with the schema's columns, flushing by rows and by time, a hook that never blocks
the front, rows that survive a killed process, the real front logging its traffic, and the evaluation's reference
set with the same columns.

Nothing here asserts on durations: waits poll a condition (the deadline only stops a broken build from hanging),
and "never blocks" is shown with an embedder held on an Event while the front's calls return.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.embedders import MelEmbedder
from monitoring.features import frames_from_bytes
from monitoring.request_log import RequestLogger, arrow_schema, part_files, read_log
from monitoring.schema import COLUMNS, MEL_FRAMES
from tests.support import REPO

RATE = 16_000


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Poll until `condition` holds; the timeout only keeps a broken build from hanging."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def record(prompt: str = "calm piano in D minor at 90 BPM", when: float | None = None, seconds: float = 0.5) -> dict:
    """A record as serving/front/run.py's Run.record makes it."""
    t = np.arange(round(seconds * RATE)) / RATE
    params = {"prompt": prompt, "duration": seconds, "guidance": 3.0, "temperature": 1.0, "top_k": 250, "top_p": 0.0}
    return {
        "time": time.time() if when is None else when,
        "route": "/v1/generate",
        "prompt": prompt,
        "params": {**params, "seed": None},
        "seed": 7,
        "timing": {"first_chunk_ms": 12.5, "generation_ms": 250.0, "queued_ms": 0.0, "real_time_factor": 2.0},
        "cancelled": False,
        "sample_rate": RATE,
        "audio": (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
    }


class HeldEmbedder:
    """MelEmbedder that waits for `release` before each clip and says when one has begun."""

    def __init__(self) -> None:
        self.inner, self.started, self.release = MelEmbedder(), threading.Event(), threading.Event()
        self.name, self.dim, self.sample_rate = "mel", 64, 16_000

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        self.started.set()
        self.release.wait()
        return self.inner.embed(audio, sample_rate)


@pytest.mark.unit
def test_part_files_hold_every_schema_column_with_its_type(tmp_path):
    with RequestLogger(tmp_path, flush_rows=2, flush_seconds=3600) as logger:
        logger(record("lo-fi hip hop, 80 bpm"))
        logger(record("穏やかなピアノ曲"))
    (part,) = part_files(tmp_path)
    assert pq.read_schema(part).equals(arrow_schema(), check_metadata=False)
    rows = read_log(tmp_path)
    assert list(rows.columns) == list(COLUMNS) and len(rows) == 2
    first = rows.iloc[0]
    assert first["prompt"] == "lo-fi hip hop, 80 bpm" and first["route"] == "/v1/generate"
    assert str(rows["time"].dtype) == "datetime64[us, UTC]" and rows["cancelled"].dtype == bool
    assert first["seed"] == 7 and first["top_k"] == 250 and first["guidance_scale"] == 3.0
    assert first["latency_s"] == 0.25 and first["first_chunk_s"] == 0.0125 and first["real_time_factor"] == 2.0
    assert first["prompt_tempo_bpm"] == 80.0 and rows.iloc[1]["prompt_non_ascii_share"] == 1.0
    assert first["duration_s"] == pytest.approx(0.5)
    assert np.isnan(first["prompt_embedding_0"])  # no projection given: the embedding columns are null
    assert frames_from_bytes(first["mel_frames"]).shape == (MEL_FRAMES, 64)


@pytest.mark.unit
def test_rows_are_flushed_every_flush_rows_and_the_rest_on_close(tmp_path):
    logger = RequestLogger(tmp_path, flush_rows=2, flush_seconds=3600)
    for i in range(5):
        logger(record(f"prompt {i}"))
    wait_for(lambda: len(part_files(tmp_path)) == 2, "two full parts")
    assert len(read_log(tmp_path)) == 4  # the fifth waits for a second row or the clock (an hour away)
    logger.close()
    assert [len(pq.read_table(p)) for p in part_files(tmp_path)] == [2, 2, 1]
    assert list(read_log(tmp_path)["prompt"]) == [f"prompt {i}" for i in range(5)]
    assert logger.rows_written == 5 and logger.parts_written == 3 and logger.dropped == 0


@pytest.mark.unit
def test_a_lone_row_is_flushed_when_flush_seconds_pass(tmp_path):
    with RequestLogger(tmp_path, flush_rows=1000, flush_seconds=0.05) as logger:
        logger(record("only one"))
        wait_for(lambda: len(part_files(tmp_path)) == 1, "the time-based flush")
        assert list(read_log(tmp_path)["prompt"]) == ["only one"]


@pytest.mark.unit
def test_the_hook_returns_at_once_while_features_are_slow_and_drops_when_full(tmp_path):
    held = HeldEmbedder()
    logger = RequestLogger(tmp_path, flush_rows=100, flush_seconds=3600, max_queue=2, embedder=held)
    try:
        logger(record("first"))
        held.started.wait(60)  # the worker is inside the embedder, held there
        for i in range(3):  # two fit in the queue; the third finds it full
            logger(record(f"queued {i}"))
        # Every call above returned while the worker was still held: the front never waits for features.
        assert not held.release.is_set() and logger.dropped == 1
    finally:
        held.release.set()
    logger.close()
    assert list(read_log(tmp_path)["prompt"]) == ["first", "queued 0", "queued 1"]
    logger(record("too late"))  # after close: counted, not raised
    assert logger.dropped == 2


@pytest.mark.unit
def test_a_record_without_audio_or_with_bad_audio_still_gets_its_row(tmp_path):
    cancelled = record("cancelled early") | {"audio": np.zeros(0, dtype=np.float32), "cancelled": True}
    broken = record("broken") | {"audio": np.full(800, np.nan, dtype=np.float32)}
    with RequestLogger(tmp_path) as logger:
        logger(cancelled)
        logger(broken)
        logger({"time": "yesterday"})  # malformed: its row is lost and counted, and the worker goes on
        logger(record("after"))
        assert logger.flush(timeout=120)
        assert logger.dropped == 1 and len(read_log(tmp_path)) == 3
    rows = read_log(tmp_path).set_index("prompt").loc[["cancelled early", "broken"]]
    assert rows.loc["cancelled early", "cancelled"] and not rows.loc["broken", "cancelled"]
    assert rows[["duration_s", "loudness_lufs"]].isna().all().all() and rows["mel_frames"].isna().all()


@pytest.mark.unit
def test_read_log_filters_by_time_and_skips_temporary_files(tmp_path):
    start = time.time() - 3600
    with RequestLogger(tmp_path, flush_rows=2) as logger:
        for offset in (0, 10, 20):
            logger(record(f"at {offset}", when=start + offset))
    (tmp_path / ".part-20990101T000000000000Z-1-000000.parquet.tmp").write_bytes(b"half a file")
    assert list(read_log(tmp_path)["prompt"]) == ["at 0", "at 10", "at 20"]
    assert list(read_log(tmp_path, since=start + 5, until=start + 20)["prompt"]) == ["at 10"]
    iso = datetime.fromtimestamp(start + 5, UTC).isoformat()
    assert list(read_log(tmp_path, since=iso)["prompt"]) == ["at 10", "at 20"]
    naive = datetime.fromtimestamp(start + 15, UTC).replace(tzinfo=None)  # taken as UTC
    assert list(read_log(tmp_path, until=naive)["prompt"]) == ["at 0", "at 10"]
    assert read_log(tmp_path, since=time.time() + 3600).empty  # parts older than `since` are not even opened
    empty = read_log(tmp_path / "nothing-yet")
    assert empty.empty and list(empty.columns) == list(COLUMNS)


# A process that logs, says once 4 rows are flushed, and keeps logging until it is killed mid-way.
_CHILD = """
import sys, time
import numpy as np
from monitoring.request_log import RequestLogger, part_files
log_dir = sys.argv[1]
logger = RequestLogger(log_dir, flush_rows=2, flush_seconds=3600)
audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
def record(i):
    return {"time": time.time(), "route": "/v1/generate", "prompt": f"row {i}", "params": {}, "seed": i,
            "timing": {}, "cancelled": False, "sample_rate": 16000, "audio": audio}
for i in range(4):
    logger(record(i))
while len(part_files(log_dir)) < 2:
    time.sleep(0.01)
print("flushed", flush=True)
i = 4
while True:  # more rows and more flushes, until the kill lands wherever it lands
    logger(record(i))
    i += 1
    time.sleep(0.05)
"""


@pytest.mark.integration
def test_a_killed_process_keeps_every_flushed_row(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "flushed"
        wait_for(lambda: len(part_files(tmp_path)) >= 3, "a flush after the first four rows")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    rows = read_log(tmp_path)
    parts = part_files(tmp_path)
    # Whole parts only: every flushed row is there, in order, and nothing half-written was read. (A row the
    # worker could not keep up with is dropped at the queue, so later numbers may skip; the first four may not.)
    assert len(rows) == 2 * len(parts) >= 6
    numbers = [int(prompt.removeprefix("row ")) for prompt in rows["prompt"]]
    assert numbers[:4] == [0, 1, 2, 3] and numbers == sorted(set(numbers))
    assert all(not p.name.startswith(".") for p in parts)


@pytest.fixture(scope="module")
def evaluated(micro_dir, tmp_path_factory) -> Path:
    """A folder with a micro evaluation (three held-out prompts, 1 s each, the mel embedder) in evaluation/ and
    its reference set in reference/."""
    from components.evaluate import evaluate
    from components.prepare import prepare
    from monitoring.reference import build_reference
    from settings.params import DataParams, EvaluateParams

    root = tmp_path_factory.mktemp("reference")
    splits = {"train": 0.6, "valid": 0.1, "test": 0.3}
    prepare(DataParams(count=10, clip_seconds=1.0, seed=3, splits=splits), root / "corpus", show_progress=False)
    params = EvaluateParams(
        max_prompts=3,
        duration=1.0,
        continuation_seconds=0.0,  # off: monitoring's reference does not use it
        batch_size=3,
        reference_clips=2,
        report_samples=1,
        embedders=("mel",),
        classifier_embedder="mel",
        gate_embedder="mel",
    )
    evaluate(micro_dir, root / "corpus", root / "evaluation", params)
    build_reference(root / "evaluation", micro_dir, root / "reference")
    return root


@pytest.fixture
def reference_dir(evaluated: Path) -> Path:
    return evaluated / "reference"


@pytest.mark.integration
def test_the_reference_set_has_the_logs_columns_and_the_held_out_prompts(evaluated, reference_dir):
    import pandas as pd

    from monitoring.reference import read_reference

    assert {p.name for p in reference_dir.iterdir()} == {
        "reference.parquet",
        "prompt_projection.npz",
        "mel_model.npz",
        "mel_real.npz",
        "reference.json",
    }
    assert pq.read_schema(reference_dir / "reference.parquet").equals(arrow_schema(), check_metadata=False)
    rows = read_reference(reference_dir)
    held_out = pd.read_csv(evaluated / "evaluation" / "per_prompt.csv")
    assert json.loads((reference_dir / "reference.json").read_text())["rows"] == 3
    assert list(rows["prompt"]) == list(held_out[held_out["system"] == "model"]["caption"]) and len(rows) == 3
    assert (rows["route"] == "evaluation").all() and rows["duration_s"].to_numpy() == pytest.approx(1.0)
    assert rows["prompt_tempo_bpm"].notna().all() and rows["prompt_key"].notna().all()  # captions name both
    assert rows[[f"prompt_embedding_{i}" for i in range(2)]].abs().sum().gt(0).all()
    assert all(frames_from_bytes(blob).shape == (MEL_FRAMES, 64) for blob in rows["mel_frames"])


@pytest.mark.integration
def test_the_real_front_logs_rest_and_websocket_traffic(micro_dir, reference_dir, tmp_path):
    from fastapi.testclient import TestClient

    from monitoring.reference import read_reference
    from monitoring.traffic import drive_front
    from serving.front.app import FrontSettings, create_app
    from serving.sources import LocalSource

    reference = read_reference(reference_dir)
    logger = RequestLogger.from_reference(tmp_path / "log", reference_dir, micro_dir, flush_rows=2)
    prompts = [reference["prompt"][0], "fast techno at 140 BPM in F# minor", "穏やかなピアノ曲"]
    app = create_app(LocalSource(micro_dir), FrontSettings(request_log=logger))
    with TestClient(app) as client:
        served = drive_front(client, prompts, duration=0.5, seed=11)
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"prompt": "ambient pads", "duration": 0.75, "seed": 5})
            while (message := ws.receive())["type"] != "websocket.close":
                pass
    # Leaving the client ran the app's shutdown, which waits for the hook calls; close writes what is queued.
    logger.close()
    assert [s["status"] for s in served] == [200, 200, 200]
    rows = read_log(tmp_path / "log")
    assert sorted(rows["prompt"]) == sorted([*prompts, "ambient pads"])
    by_prompt = rows.set_index("prompt")
    assert list(by_prompt.loc[prompts, "seed"]) == [11, 12, 13] and by_prompt.loc["ambient pads", "seed"] == 5
    assert by_prompt.loc["ambient pads", "route"] == "/v1/stream"
    assert by_prompt.loc[prompts[0], "route"] == "/v1/generate"
    assert by_prompt.loc[prompts, "duration_s"].to_numpy() == pytest.approx(0.5)
    assert by_prompt.loc["ambient pads", "duration_s"] == pytest.approx(0.75)
    assert (rows["latency_s"] > 0).all() and (rows["first_chunk_s"] <= rows["latency_s"]).all()
    assert by_prompt.loc[prompts[1], "prompt_key"] == "F-sharp minor"
    assert by_prompt.loc[prompts[1], "prompt_tempo_bpm"] == 140
    # The same prompt lands where the reference put it: one text encoder, one projection.
    columns = [f"prompt_embedding_{i}" for i in range(4)]
    logged, expected = by_prompt.loc[prompts[0], columns], reference.loc[0, columns]
    np.testing.assert_allclose(logged.to_numpy(float), expected.to_numpy(float), atol=1e-5)
    assert logger.dropped == 0 and message["code"] == 1000

    # `musicops monitor report` over this log, as a user runs it after serving.
    from typer.testing import CliRunner

    from monitoring.cli import app as monitor_app

    (tmp_path / "params.yaml").write_text(f"monitor:\n  workspace: {tmp_path / 'workspace'}\n")
    args = ["report", "--params", str(tmp_path / "params.yaml"), "--log-dir", str(tmp_path / "log")]
    args += ["--reference-dir", str(reference_dir), "--out", str(tmp_path / "report"), "--window", "1h"]
    result = CliRunner().invoke(monitor_app, args)
    assert result.exit_code == 0, result.output
    assert "4 requests; drifted features" in result.output
    assert "prompt_chars" in (tmp_path / "report" / "report.html").read_text()
