"""The KServe-version-specific part of the predictor: starting kserve.ModelServer bound to one host.

Mirrors kserve 0.21.0: `ModelServer.start` (kserve/model_server.py) and `GRPCServer.start`
(kserve/protocol/grpc/server.py). KServe's ModelServer binds 0.0.0.0 (HTTP) and [::] (gRPC) with no host option,
while servers here listen on 127.0.0.1 outside Kubernetes, so `PredictorServer.start` repeats ModelServer.start
(one uvicorn worker, no TLS files, gRPC always on) with servers bound to the host asked for. It calls ModelServer's
private members (`_register_and_check_atleast_one_model_is_ready`, `_rest_server`, `_grpc_server`, `_serve`),
GRPCServer's (`_data_plane`, `_model_repository_extension`, `_port`, `_server`) and RESTServer's uvicorn `config`
and `_server`, and replaces ModelServer's `dataplane` with one whose V1 decoding also reads NaN
(LenientJSONDataPlane over `DataPlane.decode`). When kserve is upgraded, compare those upstream methods with the ones
here first: this is the one file that knows them.

    python -m serving.predictor --model_dir=artifacts/model [--backend=auto|torch|onnx] \\
        [--http_port=8080] [--grpc_port=8081] [--host=127.0.0.1] [--max_batch=8] [--max_queue=32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from concurrent import futures
from contextlib import suppress
from typing import Any

import kserve
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import aio
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, PredictorProtocol
from kserve.errors import InvalidInput
from kserve.model_server import app as kserve_app
from kserve.model_server import args as kserve_args
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from model.errors import ModelInputError
from model.loader import BACKENDS
from model.torch_threads import keep_to_one_thread
from serving.json_safe import validation_error_handler
from serving.launch import READY_LINE
from serving.predictor.musicgen import MODEL_NAME, RETRY_AFTER_S, MusicGenModel, ServiceUnavailable

# A batch of 8 clips of 30 s at 32 kHz in FP32 is 31 MB; KServe's default gRPC limit is 8 MB.
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
V1_PROTOCOL = PredictorProtocol.REST_V1.value  # DataPlane.decode's default
DESCRIPTION = "The KServe predictor: a `kserve.Model` serving a MusicGen model through a GenerationEngine, V1 and V2."


async def service_unavailable_handler(_: Request, error: ServiceUnavailable) -> JSONResponse:
    """REST's answer to ServiceUnavailable: 503 with Retry-After, registered on KServe's app by PredictorServer."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(status_code=503, content={"error": str(error)}, headers=headers)


class LenientJSONDataPlane(DataPlane):
    """KServe's DataPlane, whose V1 JSON decoding also reads NaN and +-Infinity, so the protocol can name the field.

    KServe parses a V1 body with orjson, which refuses those literals with a 400 naming only a character offset;
    Python's json (what FastAPI, and so KServe's V2 REST route, parses with) reads them as floats. A body only
    Python's json reads is decoded again from that parse, and serving/predictor/protocol.py refuses the non-finite
    value with a 400 naming the instance and field.
    """

    def decode(
        self, body: Any, headers: Any, protocol_version: str = V1_PROTOCOL, model_name: str | None = None
    ) -> tuple[Any, dict]:
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            parsed = None
            if isinstance(body, bytes) and protocol_version == V1_PROTOCOL:  # V2 bodies have their own decoding
                with suppress(ValueError):  # not JSON to either parser: KServe's own error stands
                    parsed = json.loads(body)
            if not isinstance(parsed, dict):
                raise
            return super().decode(parsed, headers, protocol_version, model_name)


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
    """host:port, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PredictorServer(kserve.ModelServer):
    """kserve.ModelServer on one host: its REST and gRPC servers, bound where asked (KServe binds 0.0.0.0)."""

    def __init__(self, host: str, **options: Any) -> None:
        super().__init__(**options)
        self.host = host
        self.dataplane = LenientJSONDataPlane(model_registry=self.registered_models)

    def start(self, models: list[kserve.Model]) -> None:
        """Serve until SIGTERM or SIGINT (run it in the main thread); prints one line once both servers listen.

        ModelServer.start with one worker, its servers replaced by ones bound to `host`."""
        self._register_and_check_atleast_one_model_is_ready(models)
        kserve_app.add_exception_handler(ServiceUnavailable, service_unavailable_handler)
        # FastAPI's stock 422 is a 500 when the request held NaN or Infinity (V2 JSON, which Python's json reads).
        kserve_app.add_exception_handler(RequestValidationError, validation_error_handler)
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
        """Print the ready line (serving/launch.py waits for it) once both servers listen."""
        while not (self._rest_server._server.started and self._grpc_server.started):
            await asyncio.sleep(0.05)
        http, grpc = address(self.host, self.http_port), address(self.host, self.grpc_port)
        print(f"{READY_LINE} http://{http} (V1, V2), grpc {grpc} (V2)", flush=True)


def default_host() -> str:
    """0.0.0.0 in a Kubernetes pod (the kubelet and KServe's router reach it there), 127.0.0.1 elsewhere."""
    return "0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    """The ServingRuntime's entry point; KServe passes `--flag=value`."""
    parser = argparse.ArgumentParser(prog="python -m serving.predictor", description=DESCRIPTION)
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
