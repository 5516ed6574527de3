"""The FastAPI front: REST, Server-Sent Events and WebSocket streaming, the web page, health and /metrics.

    app = create_app(LocalSource("artifacts/model"), FrontSettings(api_key="secret"))
    python -m serving.front --model artifacts/model [--backend onnx] [--remote URL] [--port 8000] [--api-key KEY]

Endpoints (/v1/generate* and /v1/stream need the API key when one is set: `Authorization: Bearer KEY` or
`X-API-Key: KEY`; the streaming ones also take `?api_key=KEY`, since browsers cannot set headers on EventSource
or WebSocket):

- `POST /v1/generate`, JSON {prompt, duration, guidance, temperature, top_k, top_p, seed} -> audio/wav (16-bit
  mono), with headers X-Seed, X-Sample-Rate, X-First-Chunk-Ms, X-Generation-Ms, X-Queued-Ms, X-Real-Time-Factor,
  X-Audio-Seconds, X-Model (the fingerprint of the model that made it) and Server-Timing.
- `GET /v1/generate/stream?prompt=...&duration=...` -> text/event-stream: `event: header` {sample_rate, channels,
  format: "pcm16"}, an `event: chunk` per chunk (base64 of 16-bit little-endian PCM), then `event: stats` (seed,
  first_chunk_ms, generation_ms, real_time_factor, samples, ...) or `event: error` {status, message}.
- `WS /v1/stream`: see serving/front/ws.py for its messages and close codes.
- `GET /v1/info` (no key needed): audio format, limits and defaults, for the page, and which model serves
  (`model`: path, fingerprint, load time; it changes when a new model is hot-reloaded). `/healthz` (the process is
  alive), `/readyz` (the audio source is ready, else 503), `/metrics` (Prometheus), `/docs` (OpenAPI), `/` (the page).

Limits: `max_concurrent_streams` generations at once and `max_queue` more waiting for a slot; beyond that a request
is refused at once (429 with Retry-After; WebSocket close 1013). A client that goes away cancels its generation and
frees its slot at once. Validation errors are 422s naming the field.
"""

# No `from __future__ import annotations` here: the request models are built per app (their limits come from the
# settings), and FastAPI must see those classes themselves, not their names, in the routes' signatures.

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from model.errors import ModelInputError
from serving.engine import EngineBusy, EngineStopped
from serving.front.admission import Overloaded
from serving.front.metrics import MetricsMiddleware
from serving.front.run import Run
from serving.front.state import Front, FrontSettings
from serving.front.ws import serve_socket
from serving.json_safe import validation_error_handler
from serving.sources import AudioSource, LocalSource, RemoteSource, SourceError
from serving.wire import pcm16_base64, sse, wav_bytes
from settings.params import ServeSettings

# The front's API in one import: FrontSettings and Front live in serving/front/state.py (shared with ws.py).
__all__ = ["Front", "FrontSettings", "create_app", "main", "serve_in_thread"]

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"
# Readable by a page on another (allowed) origin.
TIMING_HEADERS = [
    "X-Seed",
    "X-Sample-Rate",
    "X-First-Chunk-Ms",
    "X-Generation-Ms",
    "X-Queued-Ms",
    "X-Real-Time-Factor",
    "X-Audio-Seconds",
    "X-Model",
    "Server-Timing",
]


def create_app(source: AudioSource, settings: FrontSettings | None = None) -> FastAPI:
    """The front over `source`, which the app starts on startup and closes on shutdown."""
    front = Front(source, settings or FrontSettings())
    settings = front.settings
    RequestModel, QueryModel = front.request_model, front.query_model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await source.start()
        try:
            yield
        finally:
            await source.close()
            await front.drain_logs()

    app = FastAPI(
        title=settings.title,
        summary="Text-to-music: WAV over REST, 16-bit PCM streamed over WebSocket and Server-Sent Events.",
        lifespan=lifespan,
    )
    app.state.front = front

    # Declared as security schemes so that /docs offers an Authorize button.
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    key_query = APIKeyQuery(name="api_key", auto_error=False, description="For EventSource, which sends no headers.")

    def check_key(*candidates: str | None) -> None:
        if not front.key_ok(*candidates):
            raise HTTPException(401, "a valid API key is needed", headers={"WWW-Authenticate": "Bearer"})

    def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        header_key: Annotated[str | None, Depends(key_header)],
    ) -> None:
        check_key(credentials.credentials if credentials else None, header_key)

    def require_key_or_query(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        header_key: Annotated[str | None, Depends(key_header)],
        query_key: Annotated[str | None, Depends(key_query)],
    ) -> None:
        check_key(credentials.credentials if credentials else None, header_key, query_key)

    async def on_problem(request: Request, error: Exception) -> JSONResponse:
        status, message = front.problem(error)
        headers = {"Retry-After": str(settings.retry_after_s)} if status in (429, 503) else None
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    for kind in (Overloaded, EngineBusy, EngineStopped, ModelInputError, SourceError):
        app.add_exception_handler(kind, on_problem)
    # FastAPI's own 422 handler fails (a 500) on a request holding NaN or Infinity, which its errors echo.
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    # The key dependencies declare the security schemes in the OpenAPI document, so they are attached only when a
    # key is set (read once, here): a schema-driven client of an open front then expects no 401. Without a key,
    # check_key lets everything through anyway.
    keyed = settings.api_key is not None
    refusals = {429: {"description": "Busy; see Retry-After"}}
    if keyed:
        refusals[401] = {"description": "No or a wrong API key"}

    @app.post(
        "/v1/generate",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}, "description": "16-bit mono WAV"}, **refusals},
        dependencies=[Depends(require_key)] if keyed else [],
        tags=["generate"],
    )
    async def generate(body: RequestModel, request: Request) -> Response:
        """Generate a clip and answer it whole, as WAV; its seed and timing are in the headers."""
        run = Run("/v1/generate", body, source.sample_rate)
        lease = await front.admit(run)
        try:
            async for chunk in run.stream:
                run.add(chunk)
                if await request.is_disconnected():  # nobody will read the answer: stop generating
                    run.cancelled = True
                    break
        finally:
            lease.release()
            front.finish(run)
        stats = run.stats()
        headers = {
            "X-Seed": str(stats["seed"]),
            "X-Sample-Rate": str(run.sample_rate),
            "X-First-Chunk-Ms": str(stats["first_chunk_ms"]),
            "X-Generation-Ms": str(stats["generation_ms"]),
            "X-Queued-Ms": str(stats["queued_ms"]),
            "X-Real-Time-Factor": str(stats["real_time_factor"]),
            "X-Audio-Seconds": str(stats["audio_seconds"]),
            "X-Model": str(stats["model"]),
            "Server-Timing": f"first_chunk;dur={stats['first_chunk_ms']}, generation;dur={stats['generation_ms']}",
        }
        return Response(wav_bytes(run.audio(), run.sample_rate), media_type="audio/wav", headers=headers)

    @app.get(
        "/v1/generate/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}, **refusals},
        dependencies=[Depends(require_key_or_query)] if keyed else [],
        tags=["generate"],
    )
    async def generate_events(query: Annotated[QueryModel, Query()]) -> StreamingResponse:
        """Stream a clip as Server-Sent Events: a header, base64 PCM16 chunks as they are made, then stats."""
        body = RequestModel.model_validate(query.model_dump(exclude={"api_key"}))
        run = Run("/v1/generate/stream", body, source.sample_rate)
        lease = await front.admit(run)

        async def events() -> AsyncIterator[str]:
            try:
                yield sse(json.dumps({"sample_rate": run.sample_rate, "channels": 1, "format": "pcm16"}), "header")
                async for chunk in run.stream:
                    run.add(chunk)
                    yield sse(pcm16_base64(chunk), "chunk")
                yield sse(json.dumps(run.stats()), "stats")
            except (asyncio.CancelledError, GeneratorExit):  # the client went away
                run.cancelled = True
                raise
            except Exception as error:  # the status line is gone: the error travels as an event
                status, message = front.problem(error)
                yield sse(json.dumps({"status": status, "message": message}), "error")
            finally:
                lease.release()
                front.finish(run)

        # The background task releases the slot too, in case the client left before the body began.
        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(lease.release),
        )

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await serve_socket(websocket, front)

    @app.get("/v1/info", tags=["operations"])
    async def info() -> dict[str, Any]:
        """What the page needs: the audio format, the limits and defaults, whether a key is needed, and which model
        serves (its fingerprint and load time)."""
        return {
            "title": settings.title,
            "sample_rate": source.sample_rate,
            "channels": 1,
            "format": "pcm16",
            "max_duration": front.max_duration,
            "default_duration": front.default_duration,
            "max_prompt_chars": settings.max_prompt_chars,
            "auth_required": settings.api_key is not None,
            "model": front.model(),  # changes when a hot reload swaps a new model in (serving/reload.py)
        }

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """The audio source takes requests."""
        ready = await source.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """This app's Prometheus metrics."""
        return Response(generate_latest(front.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=TIMING_HEADERS,
        )
    app.add_middleware(MetricsMiddleware, metrics=front.metrics)
    return app


# -- running it ----------------------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _server(app: FastAPI, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, startup_s: float = 120.0) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread (port 0: a free one); yields its base URL, stops on exit."""
    sock = _bind(host, port)
    server = _server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="front", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the front did not start (its log says why)")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def main() -> None:
    """`python -m serving.front`: serve a local model (--model) or a remote V2 endpoint (--remote) on one port."""
    import typer

    from model.torch_threads import keep_to_one_thread

    def run(
        model: Annotated[str | None, typer.Option(help="Model directory or preset, served in this process.")] = None,
        backend: Annotated[str, typer.Option(help="In-process backend: torch, or onnx over an export.")] = "torch",
        remote: Annotated[str | None, typer.Option(help="A KServe/Triton V2 endpoint: http://host:port.")] = None,
        remote_model: Annotated[str, typer.Option(help="The model's name at the remote endpoint.")] = "musicgen",
        host: Annotated[str, typer.Option()] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="0 picks a free port.")] = 8000,
        api_key: Annotated[str | None, typer.Option(envvar="MUSICOPS_API_KEY", help="Require this key.")] = None,
        cors_origin: Annotated[list[str] | None, typer.Option(help="An origin allowed to call; repeatable.")] = None,
        max_concurrent_streams: Annotated[int, typer.Option()] = FrontSettings.max_concurrent_streams,
        max_queue: Annotated[int, typer.Option()] = FrontSettings.max_queue,
        log_dir: Annotated[str | None, typer.Option(help="Log every request here for monitoring.")] = None,
        join: Annotated[
            bool, typer.Option(help="Let requests join a batch that is already decoding (torch backend).")
        ] = True,
        reload_interval: Annotated[
            float, typer.Option(help="Seconds between checks of --model's folder for a new model; 0: never.")
        ] = ServeSettings.reload_interval_s,
    ) -> None:
        """Serve the musicops front: the web page, the REST and streaming API, /metrics."""
        if (model is None) == (remote is None):
            raise typer.BadParameter("give --model (served here) or --remote (a V2 endpoint), not both")
        threads = keep_to_one_thread()  # before any torch work here: the engine's worker takes the cores
        source = (
            RemoteSource(remote, remote_model)
            if remote
            else LocalSource(model, backend, join=join, threads=threads, reload_interval_s=reload_interval)
        )
        request_log = None
        if log_dir:  # without a local model there is no text encoder: the log has no prompt embeddings
            from monitoring.request_log import RequestLogger

            request_log = RequestLogger(log_dir)
        settings = FrontSettings(
            request_log=request_log,
            api_key=api_key,
            cors_origins=cors_origin or [],
            max_concurrent_streams=max_concurrent_streams,
            max_queue=max_queue,
        )
        sock = _bind(host, port)
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"musicops front: http://{shown}:{sock.getsockname()[1]}/  (API docs at /docs)")
        try:
            _server(create_app(source, settings), "info").run(sockets=[sock])
        finally:
            if request_log is not None:
                request_log.close()

    typer.run(run)
