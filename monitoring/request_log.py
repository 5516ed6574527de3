"""The request log: one row per served generation (monitoring/schema.py's columns) in Parquet part files.

    logger = RequestLogger.from_reference("artifacts/monitoring/requests", reference_dir, "artifacts/model")
    app = create_app(backend, FrontSettings(request_log=logger))   # the front calls logger(record) per generation
    ...
    logger.close()                                                 # also run at exit
    frame = read_log("artifacts/monitoring/requests", since="2026-11-23T10:00Z")

Calling the logger only puts the front's record on a bounded queue, so serving never waits for feature
extraction (0.3-0.5 s per 10 s clip); when the queue is full the record is dropped and counted, never waited
for. One worker thread turns records into rows and, every `flush_rows` rows or `flush_seconds` after the first
unwritten row, writes them as one part file: to a hidden temporary name first, fsynced, then renamed into
place as `part-<UTC time>-<host>.<pid>-<seq>.parquet`. A crash therefore loses at most the rows not yet flushed,
and a reader never sees half a file. Processes sharing a folder (front workers, or front pods on one volume, each
pid 1) never collide: host and pid are in the name.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.atomic_io import atomic_file
from monitoring.features import PromptProjection, TextEncoder, audio_row, empty_audio_row, prompt_columns
from monitoring.schema import COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from model.embedders import Embedder

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
_WRITER = f"{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())[:40] or 'host'}.{os.getpid()}"
_PART_TIME = re.compile(r"^part-(\d{8}T\d{6}\d{6})Z-")
_ARROW_TYPES = {
    "timestamp[us, tz=UTC]": lambda pa: pa.timestamp("us", tz="UTC"),
    "string": lambda pa: pa.string(),
    "double": lambda pa: pa.float64(),
    "int64": lambda pa: pa.int64(),
    "bool": lambda pa: pa.bool_(),
    "binary": lambda pa: pa.binary(),
}


def arrow_schema() -> pa.Schema:
    """monitoring/schema.COLUMNS as a pyarrow schema (every column nullable)."""
    import pyarrow as pa

    return pa.schema([(name, _ARROW_TYPES[kind](pa)) for name, kind in COLUMNS.items()])


def request_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The request columns of one front record (serving/front/run.Run.record's dict); missing parts are null."""
    params = record.get("params") or {}
    timing = record.get("timing") or {}

    def seconds(key: str) -> float | None:
        return None if timing.get(key) is None else timing[key] / 1000.0

    seed = record.get("seed", params.get("seed"))
    return {
        "time": datetime.fromtimestamp(record.get("time", time.time()), UTC),
        "route": record.get("route"),
        "prompt": record.get("prompt", params.get("prompt", "")),
        "duration": params.get("duration"),
        "guidance_scale": params.get("guidance"),
        "temperature": params.get("temperature"),
        "top_k": params.get("top_k"),
        "top_p": params.get("top_p"),
        "seed": None if seed is None else int(seed),
        "cancelled": bool(record.get("cancelled", False)),
        "latency_s": seconds("generation_ms"),  # the front times generation_ms from the request's arrival
        "first_chunk_s": seconds("first_chunk_ms"),
        "real_time_factor": timing.get("real_time_factor"),
    }


def record_audio_row(record: dict[str, Any], embedder: Embedder | None = None) -> dict[str, Any]:
    """The audio columns of a front record; all null when it has no audio (cancelled before the first chunk)."""
    audio = record.get("audio")
    if audio is None or np.asarray(audio).size == 0:
        return empty_audio_row()
    return audio_row(np.asarray(audio, dtype=np.float32), int(record["sample_rate"]), embedder)


@dataclass
class _Flush:
    """Queued by `flush()`: the worker writes what it has, then sets `done`."""

    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class RequestLogger:
    """The front's `request_log` hook: `logger(record)` never blocks; rows reach `log_dir` in part files.

    `projection` and `text_encoder` (both or neither) fill the prompt_embedding_* columns; without them those
    columns are null. `embedder` makes mel_frames (MelEmbedder by default). `max_queue` records may wait for
    the worker; more are dropped and counted in `dropped`, with a warning.
    """

    def __init__(
        self,
        log_dir: str | Path,
        projection: PromptProjection | None = None,
        text_encoder: TextEncoder | None = None,
        flush_rows: int = 32,
        flush_seconds: float = 5.0,
        max_queue: int = 64,
        embedder: Embedder | None = None,
    ) -> None:
        if (projection is None) != (text_encoder is None):
            raise ValueError("pass a prompt projection and the text encoder it was fitted with, or neither")
        if flush_rows < 1 or flush_seconds <= 0 or max_queue < 1:
            raise ValueError("flush_rows, flush_seconds and max_queue must be positive")
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.projection, self.text_encoder, self.embedder = projection, text_encoder, embedder
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.dropped = 0  # records refused (queue full or logger closed) or lost to a failed write
        self.rows_written = 0
        self.parts_written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._batch: list[dict[str, Any]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # `dropped` is counted from the front's threads and the worker
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="request-log", daemon=True)
        self._worker.start()
        atexit.register(self.close)

    @classmethod
    def from_reference(
        cls, log_dir: str | Path, reference_dir: str | Path, model: str | Path, **options: Any
    ) -> RequestLogger:
        """A logger whose prompt embeddings use the reference's projection (monitoring/reference.py's
        prompt_projection.npz) and the text encoder of `model` (a model directory or ONNX export)."""
        projection = PromptProjection.load(Path(reference_dir) / "prompt_projection.npz")
        return cls(log_dir, projection, TextEncoder.from_model_dir(model), **options)

    # -- the hook --------------------------------------------------------------------------------------------------

    def __call__(self, record: dict[str, Any]) -> None:
        """Queue one front record (see serving/front/run.Run.record); returns at once, whatever happens."""
        if self._closed:
            self._drop("the request log is closed")
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop(f"the request log's queue is full ({self._queue.maxsize} records wait for the worker)")

    def flush(self, timeout: float | None = None) -> bool:
        """Write every record queued so far; False if that did not finish within `timeout` seconds."""
        if self._closed:
            return True
        request = _Flush()
        self._queue.put(request, timeout=timeout)  # may wait for room: only callers that ask to wait call this
        return request.done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Write what is queued and stop the worker. Idempotent; registered with atexit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("the request log worker did not finish within %s s; unwritten rows are lost", timeout)
            return
        # Whatever a racing caller queued behind the stop: count the records, release any flush() waiting.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                item.done.set()
            elif item is not _STOP:
                self._drop("the request log is closed")

    def __enter__(self) -> RequestLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped += 1
            count = self.dropped
        if count == 1 or count % 100 == 0:  # a warning per record would flood the log exactly when it is busiest
            log.warning("%s: dropped a request record (%d dropped so far)", reason, count)

    # -- the worker ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        from model.torch_threads import keep_to_one_thread  # imports torch: not before a record needs it

        keep_to_one_thread()  # the generation engine's worker has the cores (model/torch_threads.py)
        deadline: float | None = None  # when the oldest unwritten row must be written
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            record = item is not None and item is not _STOP and not isinstance(item, _Flush)
            if record:
                try:
                    self._batch.append(self._row(item))
                    deadline = deadline if deadline is not None else time.monotonic() + self.flush_seconds
                except Exception:  # a boundary: a malformed record costs its row, never the worker
                    log.exception("cannot log a malformed request record")
                    self._drop("a malformed request record")
            # The clock is checked after every row too: under steady traffic the queue is never empty, and the
            # time limit must hold all the same.
            due = deadline is not None and time.monotonic() >= deadline
            if not record or due or len(self._batch) >= self.flush_rows:
                self._flush()
                deadline = None
            if isinstance(item, _Flush):
                item.done.set()
            if item is _STOP:
                return

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        """Request and audio columns now; the prompt columns at flush, where the embeddings run as one batch."""
        row = request_columns(record)
        try:
            row |= record_audio_row(record, self.embedder)
        except Exception:  # a boundary: one odd clip must not stop the log; its row keeps null audio columns
            log.exception("audio features failed for a request to %s", row["route"])
            row |= empty_audio_row()
        return row

    def _flush(self) -> None:
        if not self._batch:
            return
        rows, self._batch = self._batch, []
        prompts = [row["prompt"] or "" for row in rows]
        try:
            columns = prompt_columns(prompts, self.projection, self.text_encoder)
        except Exception:  # a boundary: without embeddings the rows are still worth keeping
            log.exception("prompt embeddings failed; their columns are null in this part")
            columns = prompt_columns(prompts, None, None)
        rows = [row | prompt for row, prompt in zip(rows, columns, strict=True)]
        try:
            self._write_part(rows)
        except Exception:  # a boundary: a full disk must not stop serving; the loss is counted and logged
            log.exception("could not write %d request-log rows to %s", len(rows), self.log_dir)
            with self._lock:
                self.dropped += len(rows)
            return
        self.rows_written += len(rows)
        self.parts_written += 1

    def _write_part(self, rows: list[dict[str, Any]]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=arrow_schema())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}Z-{_WRITER}-{next(self._sequence):06d}.parquet"
        final = self.log_dir / name
        with atomic_file(final) as handle:
            pq.write_table(table, handle)
        return final


# -- reading -------------------------------------------------------------------------------------------------------

TimeLike = datetime | str | float | int


def _timestamp(value: TimeLike) -> pd.Timestamp:
    """A UTC pandas Timestamp from a datetime, an ISO string, or unix seconds; naive values are taken as UTC."""
    import pandas as pd

    stamp = pd.Timestamp(value, unit="s") if isinstance(value, int | float) else pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def part_files(log_dir: str | Path, since: TimeLike | None = None) -> list[Path]:
    """The log's finished part files, oldest first (temporary files are hidden names and never match). With
    `since`, parts written before it are left out: a part is written after every row it holds."""
    files = sorted(Path(log_dir).glob(PART_GLOB))
    if since is None:
        return files
    start = _timestamp(since)
    kept = []
    for path in files:
        match = _PART_TIME.match(path.name)
        written = _timestamp(datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%f")) if match else None
        if written is None or written >= start:
            kept.append(path)
    return kept


def read_log(
    log_dir: str | Path, since: TimeLike | None = None, until: TimeLike | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """The logged rows with since <= time < until (either bound optional), oldest first, as a DataFrame with
    every schema column (or `columns`); a part missing a column reads it as null. Times are tz-aware UTC; an
    int64 column with nulls reads as float64 (pandas' default)."""
    import pyarrow.dataset as ds

    schema = arrow_schema()
    files = part_files(log_dir, since)
    if not files:
        frame = schema.empty_table().to_pandas()
        return frame[columns] if columns else frame
    expression = None
    if since is not None:
        expression = ds.field("time") >= _timestamp(since).to_pydatetime(warn=False)
    if until is not None:
        before = ds.field("time") < _timestamp(until).to_pydatetime(warn=False)
        expression = before if expression is None else expression & before
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    frame = dataset.to_table(columns=columns, filter=expression).to_pandas()
    return frame.sort_values("time", kind="stable").reset_index(drop=True) if "time" in frame else frame
