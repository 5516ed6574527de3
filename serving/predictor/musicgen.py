"""The KServe model: MusicGen served through a GenerationEngine, answering V1 and V2 (serving/predictor/protocol.py).

V1 answers `{"predictions": [{"audio_wav_base64", "sample_rate", "seed", "duration"}]}`; every instance goes to the
engine at once, so compatible ones share a batch. With `"stream": true` (one instance) `predict` returns an async
iterator, which KServe sends as a streaming response: Server-Sent Events (`data: {json}\\n\\n`), a header (sample
rate, format), chunks of base64 PCM16 little-endian audio, then the request's stats (or an error: the status line
has already gone out). WAV, PCM16 and SSE are serving/wire.py's, as the front's are. V2 answers AUDIO, SAMPLE_RATE
and SEED tensors.

Bad input answers 400 (gRPC INVALID_ARGUMENT) naming the field; a full queue answers 503 with Retry-After
(gRPC UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from grpc_interceptor.exceptions import Unavailable
from kserve.errors import InvalidInput
from kserve.logging import logger
from kserve.protocol.infer_type import InferRequest, InferResponse

from model.errors import ModelInputError, first_line
from model.generation_params import GenerationParams
from model.loader import load_generator, resolve_backend
from serving.engine import AudioStream, EngineBusy, EngineStopped, GenerationEngine
from serving.predictor.protocol import V2_INPUTS, V2_OUTPUTS, v1_request, v2_output, v2_requests
from serving.wire import pcm16_base64, sse, wav_base64

MODEL_NAME = "musicgen"
RETRY_AFTER_S = 1


class ServiceUnavailable(Unavailable):
    """The engine cannot take the request now (queue full, or shutting down): REST 503, gRPC UNAVAILABLE.

    KServe 0.21 has no overload error; a grpc_interceptor exception is what its gRPC interceptor turns into a
    status other than INTERNAL, and serving/predictor/server.py maps it to 503 with Retry-After on REST.
    """

    def __str__(self) -> str:
        return self.details


class MusicGenModel(kserve.Model):
    """MusicGen behind KServe: V1 (whole clips or an SSE stream) and V2 (tensors), over one GenerationEngine."""

    def __init__(
        self,
        model_dir: str | Path,
        name: str = MODEL_NAME,
        backend: str = "auto",
        max_batch: int = 8,
        max_queue: int = 32,
        threads: int | None = None,
    ) -> None:
        """`threads`: the engine worker's torch threads (see model/torch_threads.py)."""
        super().__init__(name)
        self.threads = threads
        self.model_dir, self.backend = model_dir, resolve_backend(model_dir, backend)
        self.max_batch, self.max_queue = max_batch, max_queue
        # Not `self.engine`: kserve.Model uses that name for its own (LLM) engine flag.
        self.generation: GenerationEngine | None = None

    def load(self) -> bool:
        generator = load_generator(self.model_dir, self.backend)
        self.generation = GenerationEngine(
            generator, max_batch=self.max_batch, max_queue=self.max_queue, threads=self.threads
        )
        self.ready = True
        return self.ready

    def start(self) -> None:
        """Start the engine's worker (KServe calls this when it registers the model)."""
        self.generation.start()
        self.ready = True

    def stop(self) -> None:
        """Stop the engine: KServe calls this when the server shuts down (SIGTERM, SIGINT)."""
        self.ready = False
        if self.generation is not None and not self.generation.stopping:
            self.generation.stop()
            logger.info("generation engine stopped")

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, (datatype, _) in V2_INPUTS.items()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": datatype, "shape": shape} for name, (datatype, shape) in V2_OUTPUTS.items()]

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse | AsyncIterator[str]:
        if isinstance(payload, InferRequest):
            return await self.infer_v2(payload)
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise InvalidInput('the V1 body must be a JSON object with "instances": a list of {"prompt": ...}')
        requests = [v1_request(instance, index) for index, instance in enumerate(payload["instances"])]
        if not requests:
            raise InvalidInput('instances is empty: give at least one {"prompt": ...}')
        streaming = payload.get("stream", False)
        if not isinstance(streaming, bool):
            raise InvalidInput(f"stream must be true or false, got {streaming!r}")
        if streaming:
            if len(requests) != 1:
                raise InvalidInput(f"streaming takes one instance, got {len(requests)}")
            (stream,) = self.submit(requests, lambda _: "instance 0")
            return self.sse_events(stream)
        streams = self.submit(requests, lambda index: f"instance {index}")
        audios = await self.collect(streams)
        rate = self.generation.sample_rate
        predictions = [
            {
                "audio_wav_base64": wav_base64(audio, rate),
                "sample_rate": rate,
                "seed": stream.stats.seed,
                "duration": audio.size / rate,
            }
            for audio, stream in zip(audios, streams, strict=True)
        ]
        return {"predictions": predictions}

    async def infer_v2(self, request: InferRequest) -> InferResponse:
        streams = self.submit(v2_requests(request), lambda row: f"row {row}")
        audios = await self.collect(streams)
        clips = np.zeros((len(audios), max(a.size for a in audios)), dtype=np.float32)
        for row, audio in enumerate(audios):
            clips[row, : audio.size] = audio
        seeds = np.array([s.stats.seed for s in streams], dtype=np.int64)
        rate = np.array([self.generation.sample_rate], dtype=np.int32)
        outputs = [v2_output("AUDIO", clips), v2_output("SAMPLE_RATE", rate), v2_output("SEED", seeds)]
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,  # KServe needs a string; tritonclient sends no id
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def submit(self, requests: list[tuple[str, GenerationParams]], label: Callable[[int], str]) -> list[AudioStream]:
        """Queue every request, or none: parameters are checked before anything is queued, and a full queue
        cancels what this call queued. `label(i)` names request i in errors."""
        limit = self.generation.generator.card.max_duration_seconds
        for index, (_, params) in enumerate(requests):
            try:
                params.check(limit)
            except ModelInputError as error:
                raise InvalidInput(f"{label(index)}: {first_line(error)}") from None
        streams: list[AudioStream] = []
        try:
            for prompt, params in requests:
                streams.append(self.generation.submit(prompt, params))
        except (EngineBusy, EngineStopped) as error:
            for stream in streams:
                stream.cancel()
            reason = "the generation queue is full" if isinstance(error, EngineBusy) else "the server is stopping"
            raise ServiceUnavailable(f"{reason}: {first_line(error)}; retry in {RETRY_AFTER_S} s") from None
        return streams

    @staticmethod
    async def collect(streams: list[AudioStream]) -> list[np.ndarray]:
        try:
            return await asyncio.gather(*(stream.audio() for stream in streams))
        except EngineStopped as error:
            raise ServiceUnavailable(f"the server is stopping: {first_line(error)}") from None
        finally:
            for stream in streams:  # a no-op for finished streams; frees the engine if the caller went away
                stream.cancel()

    async def sse_events(self, stream: AudioStream) -> AsyncIterator[str]:
        """One request's audio as Server-Sent Events: header, chunks, then stats (or an error)."""
        rate = stream.sample_rate
        samples = 0
        try:
            yield sse(json.dumps({"event": "header", "sample_rate": rate, "format": "pcm_s16le", "channels": 1}))
            async for chunk in stream:
                samples += chunk.size
                yield sse(json.dumps({"event": "chunk", "audio": pcm16_base64(chunk)}))
            stats = stream.stats
            end = {
                "event": "end",
                "samples": samples,
                "duration": samples / rate,
                "seed": stats.seed,
                "batch_size": stats.batch_size,
                "queued_s": stats.queued_s,
                "first_chunk_s": stats.first_chunk_s,
                "generation_s": stats.generation_s,
                "real_time_factor": stats.real_time_factor,
            }
            yield sse(json.dumps(end))
        except Exception as error:  # the 200 status has gone out: an event is the only way left to tell
            yield sse(json.dumps({"event": "error", "error": first_line(error)}))
        finally:
            stream.cancel()  # the client went away (or all is sent): free the engine
