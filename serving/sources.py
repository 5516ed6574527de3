"""Where the front's audio comes from: a model in this process, or a remote KServe/Triton V2 endpoint.

    source = LocalSource("artifacts/model")                     # GenerationEngine over load_generator(...)
    source = RemoteSource("http://predictor:8080", "musicgen")  # the Open Inference Protocol over HTTP
    await source.start()
    stream = await source.stream("calm piano", GenerationParams(duration=4.0))
    async for chunk in stream: ...                              # float32 mono chunks; stream.cancel() frees it
    stream.stats                                                # seed, first_chunk_s, real_time_factor, ...
    await source.close()

Both hand out the same kind of stream (an async iterator of float32 chunks with `cancel()` and `stats`), so the
front does not care which one it talks to. They are "sources", not "backends": in `model/` a backend is what runs
the graphs (torch or onnx), and LocalSource's `backend` argument still means exactly that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model.errors import ModelInputError
from model.generation_params import GenerationParams, draw_seed
from model.generator import BaseMusicGenerator
from model.loader import load_generator
from serving.engine import GenerationEngine, StreamStats
from serving.reload import ModelReloader, ModelVersion, ReloadRefused, fingerprint


class SourceError(RuntimeError):
    """The model's server failed or could not be reached (the front answers 502); the message names it."""


@runtime_checkable
class GenerationStream(Protocol):
    """One request's audio: async-iterate for float32 mono chunks; `cancel()` lets its generation go."""

    sample_rate: int
    stats: StreamStats

    def __aiter__(self) -> AsyncIterator[np.ndarray]: ...

    def cancel(self) -> None: ...


@runtime_checkable
class AudioSource(Protocol):
    """What the front needs from a model: streams of audio, readiness, and a clean shutdown."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def max_duration(self) -> float | None:
        """The longest clip the model makes, in seconds (None: unknown here; the model checks)."""
        ...

    async def start(self) -> None: ...

    async def stream(self, prompt: str, params: GenerationParams) -> GenerationStream:
        """Start one generation; raises EngineBusy when full and ModelInputError for bad parameters."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class LocalSource:
    """A GenerationEngine (dynamic batching, bounded queue, cancellation) over a generator in this process.

    With `reload_interval_s` and a model directory, the directory is watched (serving/reload.py): a replacement
    loads beside the serving model and takes the new requests, while the old engine finishes the ones it has."""

    def __init__(
        self,
        model: str | Path | BaseMusicGenerator,
        backend: str = "auto",
        *,
        load_options: dict[str, Any] | None = None,
        reload_interval_s: float = 0.0,
        **engine_options: Any,
    ) -> None:
        """`model` is a model directory or preset name loaded with `load_generator(model, backend, **load_options)`,
        or an already loaded generator (tests share one between apps). `engine_options` go to GenerationEngine
        (serving/engine.py has their defaults): e.g. `join` (requests may join a running batch) and `threads`
        (the engine worker's torch threads, see model/torch_threads.py). `reload_interval_s`: seconds between
        checks of a model directory for a replacement; 0 (or a preset, or a generator) never reloads."""
        in_memory = isinstance(model, BaseMusicGenerator)
        folder = None if in_memory or not Path(model).is_dir() else Path(model)
        current = fingerprint(folder) if folder is not None else None  # before loading: a change while it loads shows
        generator = model if in_memory else load_generator(model, backend, **(load_options or {}))
        self.generator = generator
        self.engine = GenerationEngine(generator, **engine_options)
        self.version = ModelVersion.of("(in memory)" if in_memory else model, current, generator.card)
        self.reloader: ModelReloader[BaseMusicGenerator] | None = None
        if folder is not None and reload_interval_s > 0:
            load = lambda path: load_generator(path, backend, **(load_options or {}))  # noqa: E731
            self.reloader = ModelReloader(folder, load, self.swap, reload_interval_s, current)
        self._engine_options = engine_options
        self._retiring: dict[GenerationEngine, asyncio.Task] = {}  # old engines finishing their requests
        self._started = False

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    @property
    def max_duration(self) -> float | None:
        return self.generator.card.max_duration_seconds

    async def start(self) -> None:
        self.engine.start()
        self._started = True
        if self.reloader is not None:
            self.reloader.start()

    async def stream(self, prompt: str, params: GenerationParams) -> GenerationStream:
        # No await between reading self.engine and submitting: a swap (on this loop) cannot fall in between.
        stream = self.engine.submit(prompt, params)
        stream.stats.model = self.version.fingerprint
        return stream

    def swap(self, generator: BaseMusicGenerator, version: ModelVersion) -> None:
        """Serve new requests with `generator`; the old engine finishes what it holds, then stops. Call on the
        event loop (ModelReloader does). Raises ReloadRefused for a model clients could not take unawares."""
        if generator.sample_rate != self.sample_rate:
            # Clients (the page, /v1/info) were told the sample rate: changing it needs a restart they notice.
            raise ReloadRefused(
                f"it makes {generator.sample_rate} Hz audio and the serving model {self.sample_rate} Hz; "
                "restart the server to change the sample rate"
            )
        # The worker's torch threads as the first engine had them: this (event loop) thread may have other counts.
        engine = GenerationEngine(generator, **{**self._engine_options, "threads": self.engine.threads})
        engine.start()
        old, self.engine, self.generator, self.version = self.engine, engine, generator, version
        retiring = asyncio.get_running_loop().create_task(asyncio.to_thread(old.drain), name="retire-engine")
        self._retiring[old] = retiring
        retiring.add_done_callback(lambda _: self._retiring.pop(old, None))

    async def ready(self) -> bool:
        return self._started and not self.engine.stopping

    async def close(self) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
        # stop() joins the worker thread, which finishes its current decoding step first.
        await asyncio.to_thread(self.engine.stop)
        for old, retiring in list(self._retiring.items()):  # shutting down: old engines stop like the new one
            await asyncio.to_thread(old.stop)
            await asyncio.gather(retiring, return_exceptions=True)


class RemoteStream:
    """A whole clip fetched by one V2 inference call, handed out in chunks as if it were streamed."""

    def __init__(self, request: asyncio.Task, sample_rate: int, seed: int, chunk_samples: int) -> None:
        self._request = request
        # A stream cancelled before anyone read it must not leave an unretrieved exception behind.
        request.add_done_callback(lambda task: task.cancelled() or task.exception())
        self.sample_rate = sample_rate
        self.chunk_samples = chunk_samples
        self.stats = StreamStats(seed=seed, batch_size=1)
        self.submitted = time.perf_counter()
        self.cancelled = False

    def cancel(self) -> None:
        # Closes the HTTP request; a V2 server has no way to hear it, so its generation may still finish.
        self.cancelled = True
        self._request.cancel()

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        audio, sample_rate = await self._request
        now = time.perf_counter() - self.submitted
        self.sample_rate = sample_rate
        self.stats.first_chunk_s = self.stats.generation_s = now
        for start in range(0, audio.size, self.chunk_samples):
            if self.cancelled:
                return
            chunk = audio[start : start + self.chunk_samples]
            self.stats.audio_s += chunk.size / sample_rate
            yield chunk

    async def audio(self) -> np.ndarray:
        chunks = [chunk async for chunk in self]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


class RemoteSource:
    """A KServe predictor or Triton serving the `musicgen` model, reached with `tritonclient.http.aio`.

    V2 REST (the Open Inference Protocol) does not stream: each request waits for the whole clip and then hands
    it out in `chunk_seconds` chunks, so first-chunk latency equals generation time. Random seeds are drawn here
    and sent (the predictor's outputs carry no seed), so every answer names the seed that reproduces it.
    Cancelling closes the HTTP request; the server finishes the generation it started.

    Inputs: PROMPT BYTES [1], DURATION, GUIDANCE_SCALE, TEMPERATURE, TOP_P FP32 [1], TOP_K INT32 [1],
    SEED INT64 [1]. Outputs: AUDIO FP32 [1, samples], SAMPLE_RATE INT32 [1].
    """

    def __init__(
        self,
        url: str,
        model_name: str = "musicgen",
        *,
        sample_rate: int | None = None,
        max_duration: float | None = None,
        chunk_seconds: float = 0.5,
        timeout_s: float = 300.0,
    ) -> None:
        """`url` is http(s)://host:port or host:port. Without `sample_rate`, `start()` asks the model for the
        shortest clip it makes and reads SAMPLE_RATE from the answer."""
        scheme, _, address = url.rpartition("://")
        if scheme not in ("", "http", "https"):
            raise ValueError(f"RemoteSource speaks V2 over HTTP: http:// or https://, got {url!r}")
        self.address, self.ssl = address.rstrip("/"), scheme == "https"
        self.model_name = model_name
        self._sample_rate = sample_rate
        self._max_duration = max_duration
        self.chunk_seconds = chunk_seconds
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def sample_rate(self) -> int:
        if self._sample_rate is None:
            raise RuntimeError("the remote sample rate is known after start()")
        return self._sample_rate

    @property
    def max_duration(self) -> float | None:
        return self._max_duration

    async def start(self) -> None:
        # Imported here: the aio client needs aiohttp and a running loop, and LocalSource users need neither.
        from tritonclient.http.aio import InferenceServerClient

        if self._client is None:
            self._client = InferenceServerClient(self.address, ssl=self.ssl, conn_timeout=self.timeout_s)
        if self._sample_rate is None:
            _, self._sample_rate = await self._infer("", GenerationParams(duration=0.02, seed=0))

    async def stream(self, prompt: str, params: GenerationParams) -> GenerationStream:
        if self._max_duration is not None:
            params.check(self._max_duration)
        seed = params.seed if params.seed is not None else draw_seed()
        request = asyncio.create_task(self._infer(prompt, replace(params, seed=seed)))
        chunk = max(1, round(self.chunk_seconds * self.sample_rate))
        return RemoteStream(request, self.sample_rate, seed, chunk)

    async def ready(self) -> bool:
        if self._client is None:
            return False
        try:
            return await self._client.is_server_ready() and await self._client.is_model_ready(self.model_name)
        except Exception:  # a boundary: an unreachable server is simply not ready
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _infer(self, prompt: str, params: GenerationParams) -> tuple[np.ndarray, int]:
        import aiohttp
        from tritonclient.http import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        values = {
            "PROMPT": np.array([prompt.encode()], dtype=np.object_),
            "DURATION": np.array([params.duration], dtype=np.float32),
            "GUIDANCE_SCALE": np.array([params.guidance_scale], dtype=np.float32),
            "TEMPERATURE": np.array([params.temperature], dtype=np.float32),
            "TOP_K": np.array([params.top_k], dtype=np.int32),
            "TOP_P": np.array([params.top_p], dtype=np.float32),
            "SEED": np.array([-1 if params.seed is None else params.seed], dtype=np.int64),
        }
        inputs = []
        for name, value in values.items():
            tensor = InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        outputs = [InferRequestedOutput("AUDIO"), InferRequestedOutput("SAMPLE_RATE")]
        try:
            # KServe answers with the request id and needs it to be a string: tritonclient sends none by default.
            result = await self._client.infer(self.model_name, inputs, outputs=outputs, request_id=uuid.uuid4().hex)
        except InferenceServerException as error:
            # 4xx: the server refused these parameters; anything else is the server's own failure.
            kind = ModelInputError if str(error.status() or "").startswith("4") else SourceError
            raise kind(f"{self.model_name} at {self.address}: {error.message()}") from None
        except (OSError, aiohttp.ClientError, TimeoutError) as error:
            raise SourceError(f"{self.model_name} at {self.address} is unreachable: {error}") from None
        audio = result.as_numpy("AUDIO")
        return np.asarray(audio[0], dtype=np.float32), int(result.as_numpy("SAMPLE_RATE").reshape(-1)[0])
