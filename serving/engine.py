"""The generation engine every server here shares: a bounded queue of requests, continuous batching,
and per-request audio streams, over one loaded generator (torch or ONNX Runtime backend).

One worker thread owns the model (generation is CPU- or GPU-bound and the model is not thread-safe);
asyncio code submits requests and reads chunks. The worker takes the oldest request, waits up to
`batch_window_s` for others it can share a batch with, and generates them as one batch, handing each
row's chunks to its stream as they are decoded. Requests share a batch when their sampling settings
(guidance, temperature, top-k, top-p) are equal, whatever their seeds: every row samples from its own random
generator, seeded with its request's seed (one drawn here when the request gave none, reported in
`StreamStats.seed`), so a request makes the same audio in any batch as alone, and any stream is reproduced
by sending its reported seed. Beam search runs alone.

On the torch backend a batch is continuous (model/continuous_batch.py): a compatible request that
arrives while it decodes joins it at the next decoding step, whatever its duration, and every row
leaves the step it is done or its stream is cancelled (a client that went away). Joining stops while an
incompatible request waits, so that one runs next instead of waiting behind an endless batch. Requests
longer than one context window (generated in windows) and the ONNX backend, whose graphs put every row
at one position, batch only when a batch starts: equal durations, and a cancelled stream stops its
batch once every stream in it is gone. A full queue refuses new requests at once (`EngineBusy`) instead
of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import torch

from model.continuous_batch import ContinuousBatch, RowRequest, join_key
from model.generation_params import GenerationParams, draw_seed
from model.generator import BaseMusicGenerator


class EngineBusy(RuntimeError):
    """The request queue is full; try again later (servers answer 429/503 with Retry-After)."""


class EngineStopped(RuntimeError):
    """The engine is stopping or stopped and takes no more requests."""


@dataclass
class StreamStats:
    """What one request cost: measured on the worker, reported at the end of a stream."""

    seed: int | None = None  # what its row sampled with (given or drawn): the request with it makes the same audio
    batch_size: int = 0  # requests in its batch when it started (a joiner counts those already decoding)
    queued_s: float = 0.0  # submit to the start of its batch
    first_chunk_s: float | None = None  # submit to its first audio chunk
    generation_s: float = 0.0  # submit to its last chunk
    audio_s: float = 0.0
    model: str | None = None  # which model made it (serving/reload.py's fingerprint), when the server knows

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio per second of wall time (above 1: faster than real time)."""
        return self.audio_s / self.generation_s if self.generation_s > 0 else 0.0


_END = object()


@dataclass(eq=False)
class AudioStream:
    """One request's audio: iterate (async) for float32 mono chunks; `cancel()` frees its generation."""

    prompt: str
    params: GenerationParams
    sample_rate: int
    stats: StreamStats = field(default_factory=StreamStats)
    submitted: float = field(default_factory=time.perf_counter)
    _loop: asyncio.AbstractEventLoop | None = None
    _chunks: asyncio.Queue | None = None
    cancelled: bool = False

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._chunks = asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled = True

    def _put(self, item: object) -> None:  # called from the worker thread
        self._loop.call_soon_threadsafe(self._chunks.put_nowait, item)

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        while True:
            item = await self._chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def audio(self) -> np.ndarray:
        """The whole clip, once generated."""
        chunks = [chunk async for chunk in self]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def batch_key(params: GenerationParams, join: bool = False) -> tuple | None:
    """Requests with equal keys can share a batch; None: this one runs alone (beam search). Seeds may differ:
    each row samples with its own.

    With `join` (a continuous batch) durations may differ: each row leaves when its own audio is done."""
    if params.num_beams > 1:
        return None
    return join_key(params) if join else (params.duration, *join_key(params))


class GenerationEngine:
    """Start with `start()` inside a running event loop; `submit()` returns an AudioStream."""

    def __init__(
        self,
        generator: BaseMusicGenerator,
        max_batch: int = 8,
        max_queue: int = 32,
        batch_window_s: float = 0.02,
        chunk_frames: int = 25,  # 0.5 s: each chunk re-decodes the codec's left context; small chunks cost speed
        first_chunk_frames: int = 4,
        join: bool = True,
        threads: int | None = None,
    ) -> None:
        """`join`: let requests join a running batch where the backend can (False: batch only at the start).
        `threads`: torch's intra-op threads for the worker (default: what the creating thread has); see
        model/torch_threads.py for why a server's other threads keep to one."""
        self.generator = generator
        self.threads = threads or torch.get_num_threads()
        self.join = join and generator.joins_running_batches
        self.max_batch, self.max_queue, self.batch_window_s = max_batch, max_queue, batch_window_s
        self.chunking = {"chunk_frames": chunk_frames, "first_chunk_frames": first_chunk_frames}
        self._queue: queue.Queue[AudioStream | None] = queue.Queue()
        self._waiting: list[AudioStream] = []  # taken from the queue, not yet batched (worker only)
        self._pending = 0  # submitted and not yet started: what max_queue bounds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.active = 0  # streams in the running batch
        self.joined = 0  # requests that joined a batch already decoding (a counter for tests and metrics)
        self.stopping = False

    @property
    def sample_rate(self) -> int:
        return self.generator.sample_rate

    @property
    def queued(self) -> int:
        return self._pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="generation", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Refuse new requests, cancel what is queued or running, and wait for the worker to finish."""
        self.stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def drain(self, timeout_s: float | None = None) -> None:
        """Finish every request already submitted (queued or decoding), then let the worker go. For an engine
        that no longer receives requests: a hot reload's old model (serving/reload.py), whose streams end on
        the model they started with. Unlike `stop()`, nothing is cancelled."""
        # The worker serves what it set aside before it reads the queue again, and the sentinel queues behind
        # every request already submitted, so it only reaches the sentinel when nothing is left.
        self._queue.put(None)
        thread = self._thread  # stop() may clear it meanwhile (a shutdown during the drain)
        if thread is not None:
            thread.join(timeout_s)

    def submit(self, prompt: str, params: GenerationParams) -> AudioStream:
        """Queue one request; raises EngineBusy when the queue is full, ModelInputError for bad params."""
        if self.stopping:
            raise EngineStopped("the generation engine is shutting down")
        params.check(self.generator.card.max_duration_seconds)
        with self._lock:
            if self._pending >= self.max_queue:
                raise EngineBusy(f"{self._pending} requests are waiting (the limit is {self.max_queue})")
            self._pending += 1
        stream = AudioStream(prompt=prompt, params=params, sample_rate=self.sample_rate)
        self._queue.put(stream)
        return stream

    # -- the worker thread ---------------------------------------------------------------------

    def _next_batch(self) -> list[AudioStream] | None:
        first = self._waiting.pop(0) if self._waiting else self._queue.get()
        if first is None:
            return None
        batch, key = [first], self._key(first.params)
        deadline = time.perf_counter() + self.batch_window_s
        # Look for company among what waits, then for what arrives within the window.
        for stream in list(self._waiting):
            if key is not None and len(batch) < self.max_batch and self._key(stream.params) == key:
                self._waiting.remove(stream)
                batch.append(stream)
        while key is not None and len(batch) < self.max_batch:
            try:
                stream = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if stream is None:
                self._queue.put(None)  # let the loop see the stop after this batch
                break
            (batch if self._key(stream.params) == key else self._waiting).append(stream)
        return batch

    def _joins(self, params: GenerationParams) -> bool:
        return self.join and ContinuousBatch.fits(self.generator, params)

    def _key(self, params: GenerationParams) -> tuple | None:
        return batch_key(params, join=self._joins(params))

    def _work(self) -> None:
        torch.set_num_threads(self.threads)  # this thread's OpenMP pool: the one that runs the model
        while True:
            batch = self._next_batch()
            if batch is None or self.stopping:
                for stream in [*(batch or []), *self._waiting]:
                    stream._put(EngineStopped("the generation engine stopped"))
                return
            with self._lock:
                self._pending -= len(batch)
            live = [s for s in batch if not s.cancelled]
            for stream in batch:
                if stream.cancelled:
                    stream._put(_END)
            if live and self._joins(live[0].params):
                self._run_continuous(live)
            elif live:
                self._run(live)

    @staticmethod
    def _started(stream: AudioStream, batch_size: int) -> int:
        """Record that a stream starts in a batch of `batch_size`; returns its seed (drawn now if it gave none,
        so that the stream can report it)."""
        seed = stream.params.seed if stream.params.seed is not None else draw_seed()
        stream.stats.seed, stream.stats.batch_size = seed, batch_size
        stream.stats.queued_s = time.perf_counter() - stream.submitted
        return seed

    def _rows(self, streams: list[AudioStream], batch_size: int) -> list[RowRequest]:
        """Start `streams` in a batch of `batch_size`: their continuous batch rows."""
        return [RowRequest(s, s.prompt, s.params.duration, self._started(s, batch_size)) for s in streams]

    def _deliver(self, stream: AudioStream, chunk: np.ndarray) -> None:
        now = time.perf_counter()
        if stream.stats.first_chunk_s is None:
            stream.stats.first_chunk_s = now - stream.submitted
        stream.stats.audio_s += chunk.shape[0] / self.sample_rate
        stream.stats.generation_s = now - stream.submitted
        stream._put(chunk.astype(np.float32, copy=False))

    def _run_continuous(self, batch: list[AudioStream]) -> None:
        key = self._key(batch[0].params)
        rows = ContinuousBatch(self.generator, batch[0].params, **self.chunking)
        members = list(batch)  # taken into this batch and not ended yet
        requests = self._rows(batch, len(batch))
        ending: object = _END  # what members still open at the end get: stopping ends them, an error fails them
        try:
            rows.add(requests)
            while len(rows) and not self.stopping:
                self.active = len(rows)
                ended = []
                for emitted in rows.step():
                    if emitted.chunk is not None and emitted.chunk.size:
                        self._deliver(emitted.handle, emitted.chunk)
                    if emitted.done:
                        ended.append(emitted.handle)
                for stream in [row.handle for row in rows.rows if row.handle.cancelled]:
                    rows.remove(stream)  # gone at once: the rest of the batch goes on
                    ended.append(stream)
                self.active = len(rows)  # before the ends go out: a client that saw its end sees the count
                for stream in ended:
                    members.remove(stream)
                    stream._put(_END)
                self._admit(rows, key, members)
        except Exception as error:  # handed to every waiting client; the worker lives on
            ending = error
        finally:
            self.active = 0
        for stream in members:
            stream._put(ending)

    def _admit(self, rows: ContinuousBatch, key: tuple | None, members: list[AudioStream]) -> None:
        """Between two decoding steps: compatible requests join (added to `members`), oldest first, up to
        max_batch.

        Joining stops at the oldest waiting request that cannot join, so it runs next."""
        while True:
            try:
                stream = self._queue.get_nowait()
            except queue.Empty:
                break
            if stream is None:
                self._queue.put(None)  # the loop sees the stop after this batch
                break
            self._waiting.append(stream)
        joining: list[AudioStream] = []
        while self._waiting and len(rows) + len(joining) < self.max_batch and self._key(self._waiting[0].params) == key:
            stream = self._waiting.pop(0)
            with self._lock:
                self._pending -= 1
            if stream.cancelled:
                stream._put(_END)
                continue
            joining.append(stream)
        if joining:
            requests = self._rows(joining, len(rows) + len(joining))
            members += joining
            rows.add(requests)
            self.joined += len(joining)

    def _run(self, batch: list[AudioStream]) -> None:
        self.active = len(batch)
        seeds = [self._started(stream, len(batch)) for stream in batch]
        try:
            prompts = [s.prompt for s in batch]
            for chunk in self.generator.stream(prompts, batch[0].params, seeds=seeds, **self.chunking):
                for row, stream in enumerate(batch):
                    if not stream.cancelled:
                        self._deliver(stream, chunk[row])
                if all(stream.cancelled for stream in batch) or self.stopping:
                    break  # nobody listens: stop at this step and free the worker
        except Exception as error:  # handed to every waiting client; the worker lives on
            for stream in batch:
                stream._put(error)
            return
        finally:
            self.active = 0
        for stream in batch:
            stream._put(_END)
