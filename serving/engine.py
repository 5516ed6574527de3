"""The generation engine every server here shares: a bounded queue of requests, dynamic batching, and
per-request audio streams, over one loaded generator (torch or ONNX Runtime backend).

One worker thread owns the model (generation is CPU- or GPU-bound and the model is not thread-safe);
asyncio code submits requests and reads chunks. The worker takes the oldest request, waits up to
`batch_window_s` for others it can share a batch with, and generates them as one batch, handing each
row's chunks to its stream as they are decoded. Requests share a batch when their generation
parameters are equal and none fixes a seed: rows of one batch draw from one random generator, so a
seeded request runs alone and stays reproducible whatever else is queued.

A cancelled stream (a client that went away) stops its batch at the next decoding step once every
stream in the batch is gone. A full queue refuses new requests at once (`EngineBusy`) instead of
letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import numpy as np

from model.generator import BaseMusicGenerator
from model.params import GenerationParams


class EngineBusy(RuntimeError):
    """The request queue is full; try again later (servers answer 429/503 with Retry-After)."""


class EngineStopped(RuntimeError):
    """The engine is stopping or stopped and takes no more requests."""


@dataclass
class StreamStats:
    """What one request cost: measured on the worker, reported at the end of a stream."""

    seed: int | None = None
    batch_size: int = 0
    queued_s: float = 0.0  # submit to the start of its batch
    first_chunk_s: float | None = None  # submit to its first audio chunk
    generation_s: float = 0.0  # submit to its last chunk
    audio_s: float = 0.0

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


def batch_key(params: GenerationParams) -> tuple | None:
    """Requests with equal keys can share a batch; None: this one runs alone (it fixes a seed, or beams)."""
    if params.seed is not None or params.num_beams > 1:
        return None
    return (params.duration, params.guidance_scale, params.temperature, params.top_k, params.top_p)


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
    ) -> None:
        self.generator = generator
        self.max_batch, self.max_queue, self.batch_window_s = max_batch, max_queue, batch_window_s
        self.chunking = {"chunk_frames": chunk_frames, "first_chunk_frames": first_chunk_frames}
        self._queue: queue.Queue[AudioStream | None] = queue.Queue()
        self._waiting: list[AudioStream] = []  # taken from the queue, not yet batched (worker only)
        self._pending = 0  # submitted and not yet started: what max_queue bounds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.active = 0  # streams in the running batch
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
        batch, key = [first], batch_key(first.params)
        deadline = time.perf_counter() + self.batch_window_s
        # Look for company among what waits, then for what arrives within the window.
        for stream in list(self._waiting):
            if key is not None and len(batch) < self.max_batch and batch_key(stream.params) == key:
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
            (batch if batch_key(stream.params) == key else self._waiting).append(stream)
        return batch

    def _work(self) -> None:
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
            if live:
                self._run(live)

    def _run(self, batch: list[AudioStream]) -> None:
        started = time.perf_counter()
        params = batch[0].params
        if params.seed is None:  # one seed for the batch, drawn here so every stream can report it
            params = replace(params, seed=int(np.random.default_rng().integers(2**31)))
        self.active = len(batch)
        for stream in batch:
            stream.stats.seed, stream.stats.batch_size = params.seed, len(batch)
            stream.stats.queued_s = started - stream.submitted
        try:
            for chunk in self.generator.stream([s.prompt for s in batch], params, **self.chunking):
                now = time.perf_counter()
                for row, stream in enumerate(batch):
                    if stream.cancelled:
                        continue
                    if stream.stats.first_chunk_s is None:
                        stream.stats.first_chunk_s = now - stream.submitted
                    stream.stats.audio_s += chunk.shape[1] / self.sample_rate
                    stream.stats.generation_s = now - stream.submitted
                    stream._put(chunk[row].astype(np.float32, copy=False))
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
