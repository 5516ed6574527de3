"""The KServe predictor: a `kserve.Model` serving a MusicGen model through a GenerationEngine, V1 and V2.

    python -m serving.predictor --model_dir=artifacts/model [--backend=auto|torch|onnx] \
        [--http_port=8080] [--grpc_port=8081] [--host=127.0.0.1] [--max_batch=8] [--max_queue=32]

V1 (REST): `POST /v1/models/musicgen:predict` with `{"instances": [{"prompt": "calm piano", "duration": 4,
"guidance": 3, "seed": 7, "temperature"?, "top_k"?, "top_p"?}]}` answers `{"predictions": [{"audio_wav_base64",
"sample_rate", "seed", "duration"}]}`; every instance goes to the engine at once, so compatible ones share a batch.
With `"stream": true` (one instance) `predict` returns an async iterator, which KServe sends as a streaming
response: Server-Sent Events (`data: {json}\\n\\n`), a header (sample rate, format), chunks of base64 PCM16
little-endian audio, then the request's stats (or an error: the status line has already gone out).

V2 / Open Inference Protocol (REST and gRPC; tritonclient works against both): inputs PROMPT (BYTES [batch]),
DURATION, GUIDANCE_SCALE, TEMPERATURE, TOP_P (FP32), TOP_K (INT32), SEED (INT64; negative: random), each
[batch] or [1] and all but PROMPT optional (MusicGen's defaults); outputs AUDIO (FP32 [batch, samples], rows of
shorter clips padded with zeros), SAMPLE_RATE (INT32 [1]) and SEED (INT64 [batch], the seed of each row).

Bad input answers 400 (gRPC INVALID_ARGUMENT) naming the field; a full queue answers 503 with Retry-After
(gRPC UNAVAILABLE). KServe's ModelServer binds 0.0.0.0 and [::]; `PredictorServer` binds the host asked for:
127.0.0.1 unless running in Kubernetes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from dataclasses import fields
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import soundfile as sf
from fastapi import Request
from fastapi.responses import JSONResponse
from grpc import aio
from grpc_interceptor.exceptions import Unavailable
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput
from kserve.logging import logger
from kserve.model_server import app as kserve_app
from kserve.model_server import args as kserve_args
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer

from model.errors import ModelInputError, first_line
from model.generator import BACKENDS, load_generator, resolve_backend
from model.params import GenerationParams
from model.torch_threads import keep_to_one_thread
from serving.engine import AudioStream, EngineBusy, EngineStopped, GenerationEngine
from serving.launch import READY_LINE

MODEL_NAME = "musicgen"
RETRY_AFTER_S = 1
# A batch of 8 clips of 30 s at 32 kHz in FP32 is 31 MB; KServe's default gRPC limit is 8 MB.
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# V2 inputs: datatype, and the GenerationParams field each fills (PROMPT fills the prompt).
V2_INPUTS = {
    "PROMPT": ("BYTES", None),
    "DURATION": ("FP32", "duration"),
    "GUIDANCE_SCALE": ("FP32", "guidance_scale"),
    "TEMPERATURE": ("FP32", "temperature"),
    "TOP_K": ("INT32", "top_k"),
    "TOP_P": ("FP32", "top_p"),
    "SEED": ("INT64", "seed"),
}
V2_OUTPUTS = {"AUDIO": ("FP32", [-1, -1]), "SAMPLE_RATE": ("INT32", [1]), "SEED": ("INT64", [-1])}
# V1 instance fields and the GenerationParams field each fills ("guidance" is the short name clients use).
V1_FIELDS = {
    "duration": "duration",
    "guidance": "guidance_scale",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "seed": "seed",
}
PARAM_TYPES = {f.name: int if f.name in ("top_k", "seed") else float for f in fields(GenerationParams)}


class ServiceUnavailable(Unavailable):
    """The engine cannot take the request now (queue full, or shutting down): REST 503, gRPC UNAVAILABLE.

    KServe 0.21 has no overload error; a grpc_interceptor exception is what its gRPC interceptor turns into a
    status other than INTERNAL, and `PredictorServer` maps it to 503 with Retry-After on REST.
    """

    def __str__(self) -> str:
        return self.details


async def service_unavailable_handler(_: Request, error: ServiceUnavailable) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(status_code=503, content={"error": str(error)}, headers=headers)


def param_value(name: str, value: Any, where: str) -> int | float | None:
    """A V1 JSON value as the GenerationParams field `name` takes it; a negative seed means a random one."""
    kind = PARAM_TYPES[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not float(value).is_integer()):
        expected = "an integer" if kind is int else "a number"
        raise InvalidInput(f"{where} must be {expected}, got {value!r}")
    value = kind(value)
    return None if name == "seed" and value < 0 else value


def v1_request(instance: Any, index: int) -> tuple[str, GenerationParams]:
    """The prompt and parameters of one V1 instance; InvalidInput names the field at fault."""
    where = f"instance {index}"
    if not isinstance(instance, dict):
        raise InvalidInput(f"{where} must be an object with a prompt, got {type(instance).__name__}")
    unknown = sorted(set(instance) - set(V1_FIELDS) - {"prompt"})
    if unknown:
        known = ", ".join(["prompt", *V1_FIELDS])
        raise InvalidInput(f"{where}: unknown field {', '.join(unknown)} (known: {known})")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidInput(f"{where}: prompt is required (a string), got {prompt!r}")
    values = {
        name: param_value(name, instance[key], f"{where}: {key}")
        for key, name in V1_FIELDS.items()
        if instance.get(key) is not None
    }
    return prompt, GenerationParams(**values)


def v2_values(tensor: InferInput) -> np.ndarray:
    """One V2 input's values, flat, once its datatype is the declared one (read otherwise, bytes would lie)."""
    datatype = V2_INPUTS[tensor.name][0]
    if tensor.datatype != datatype:
        raise InvalidInput(f"input {tensor.name} must be {datatype}, got {tensor.datatype}")
    try:
        return tensor.as_numpy().reshape(-1)
    except ValueError as error:  # data that does not fill the declared shape
        raise InvalidInput(f"input {tensor.name}: {first_line(error)}") from None


def v2_column(tensor: InferInput, batch: int) -> np.ndarray:
    """One V2 parameter input as `batch` values ([1] is repeated for every prompt)."""
    values = v2_values(tensor)
    if values.size == 1 and batch > 1:
        values = np.repeat(values, batch)
    if values.size != batch:
        raise InvalidInput(f"input {tensor.name} has {values.size} values for {batch} prompts (give 1 or {batch})")
    return values


def v2_requests(request: InferRequest) -> list[tuple[str, GenerationParams]]:
    """The prompt and parameters of each row of a V2 request; InvalidInput names the input at fault."""
    tensors = {tensor.name: tensor for tensor in request.inputs}
    unknown = sorted(set(tensors) - set(V2_INPUTS))
    if unknown:
        raise InvalidInput(f"unknown input {', '.join(unknown)} (known: {', '.join(V2_INPUTS)})")
    if "PROMPT" not in tensors:
        raise InvalidInput("input PROMPT is required (BYTES, one text per clip)")
    try:  # binary inputs arrive as bytes, JSON ones as str
        texts = [p.decode() if isinstance(p, bytes) else str(p) for p in v2_values(tensors["PROMPT"])]
    except UnicodeDecodeError:
        raise InvalidInput("input PROMPT must be UTF-8 text") from None
    if not texts:
        raise InvalidInput("input PROMPT is empty: give one text per clip")
    columns = {
        V2_INPUTS[name][1]: v2_column(tensor, len(texts)) for name, tensor in tensors.items() if name != "PROMPT"
    }
    rows = []
    for row, text in enumerate(texts):
        values = {name: PARAM_TYPES[name](column[row]) for name, column in columns.items()}
        if values.get("seed", 0) < 0:
            values["seed"] = None
        rows.append((text, GenerationParams(**values)))
    return rows


def v2_output(name: str, array: np.ndarray) -> InferOutput:
    output = InferOutput(name, list(array.shape), V2_OUTPUTS[name][0])
    # Raw bytes, which KServe re-encodes as JSON for a REST client that asks for it; an array left in `data`
    # breaks its gRPC encoding (it tests the array's truth value).
    output.set_data_from_numpy(array, binary_data=True)
    return output


def wav_base64(audio: np.ndarray, sample_rate: int) -> str:
    """Mono float audio as a base64 16-bit PCM WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pcm16_base64(chunk: np.ndarray) -> str:
    """Float audio as base64 16-bit little-endian PCM (raw, no header: the stream's header event says the rate)."""
    return base64.b64encode((np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()).decode("ascii")


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"


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
            yield sse({"event": "header", "sample_rate": rate, "format": "pcm_s16le", "channels": 1})
            async for chunk in stream:
                samples += chunk.size
                yield sse({"event": "chunk", "audio": pcm16_base64(chunk)})
            stats = stream.stats
            yield sse(
                {
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
            )
        except Exception as error:  # the 200 status has gone out: an event is the only way left to tell
            yield sse({"event": "error", "error": first_line(error)})
        finally:
            stream.cancel()  # the client went away (or all is sent): free the engine


class BoundGRPCServer(GRPCServer):
    """KServe's gRPC server (same servicer and interceptors) listening on one host instead of [::]."""

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.started = False

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        limits = [("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
        limits.append(("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES))
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=limits,
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(address(self.host, self._port))
        await self._server.start()
        self.started = True
        await self._server.wait_for_termination()


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PredictorServer(kserve.ModelServer):
    """kserve.ModelServer on one host: its REST and gRPC servers, bound where asked (KServe binds 0.0.0.0)."""

    def __init__(self, host: str, **options: Any) -> None:
        super().__init__(**options)
        self.host = host

    def start(self, models: list[kserve.Model]) -> None:
        """Serve until SIGTERM or SIGINT (run it in the main thread); prints one line once both servers listen.

        ModelServer.start with one worker, its servers replaced by ones bound to `host`."""
        self._register_and_check_atleast_one_model_is_ready(models)
        kserve_app.add_exception_handler(ServiceUnavailable, service_unavailable_handler)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        # RESTServer hardcodes 0.0.0.0 in its uvicorn Config, which is read only when serving starts.
        self._rest_server.config.host = self.host
        self._grpc_server = BoundGRPCServer(
            self.host,
            self.grpc_port,
            self.dataplane,
            self.model_repository_extension,
            kwargs=vars(kserve_args),
            grace_period=self.grace_period,
        )
        self.servers += [self._rest_server.start(), self._grpc_server.start(self.max_threads), self.announce()]
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())

    async def announce(self) -> None:
        while not (self._rest_server._server.started and self._grpc_server.started):
            await asyncio.sleep(0.05)
        http, grpc = address(self.host, self.http_port), address(self.host, self.grpc_port)
        print(f"{READY_LINE} http://{http} (V1, V2), grpc {grpc} (V2)", flush=True)


def default_host() -> str:
    """0.0.0.0 in a Kubernetes pod (the kubelet and KServe's router reach it there), 127.0.0.1 elsewhere."""
    return "0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    """The ServingRuntime's entry point; KServe passes `--flag=value`."""
    parser = argparse.ArgumentParser(prog="python -m serving.predictor", description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="a model directory, an ONNX export, or a preset name")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: onnx for an export folder")
    parser.add_argument("--model_name", default=MODEL_NAME, help="the name in the V1 and V2 routes")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--host", default=default_host(), help="default: 0.0.0.0 in Kubernetes, else 127.0.0.1")
    parser.add_argument("--max_batch", type=int, default=8, help="requests generated together at most")
    parser.add_argument("--max_queue", type=int, default=32, help="waiting requests before 503s")
    options = parser.parse_args(argv)
    threads = keep_to_one_thread()  # before any torch work here: the engine's worker takes the cores
    try:
        model = MusicGenModel(
            options.model_dir, options.model_name, options.backend, options.max_batch, options.max_queue, threads
        )
        model.load()
    except ModelInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    server = PredictorServer(options.host, http_port=options.http_port, grpc_port=options.grpc_port)
    try:
        server.start([model])
    finally:
        model.stop()  # a second stop is a no-op; this one covers a server that failed to start
    return 0


if __name__ == "__main__":
    sys.exit(main())
