"""`musicops serve`: the KServe predictor and the front with its web page on this machine, in one command.

The predictor runs as a subprocess (KServe's ModelServer wants the main thread of its own process); the front
runs here with its own in-process engine, so the page streams for real (KServe's V2 REST does not stream).
Both listen on 127.0.0.1 and stop together on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from settings import paths
from settings.params import ServeSettings

# What `musicops serve` and `musicops generate` use when no model is named: the model the gate promoted, else the
# last trained one, else the project's base model (in git, so a fresh clone has a trained model).
DEFAULT_MODELS = (paths.PROMOTED / "model", paths.MODEL, paths.BASE_MODEL)
FALLBACK_PRESET = "tiny"


def default_model() -> str:
    """The first default model folder that holds a model, else the tiny preset (random weights)."""
    for folder in DEFAULT_MODELS:
        if (folder / "config.json").is_file():
            return str(folder)
    return FALLBACK_PRESET


def request_logger(model: str, log_dir: Path, evaluation_dir: Path, reference_dir: Path, echo: Callable[[str], None]):
    """The monitoring log every request goes to. Prompt embeddings need the reference's projection: it is built
    from the evaluation when missing; without an evaluation (or for a preset) the log has no embeddings."""
    from monitoring.reference import PROJECTION_FILE, build_reference, is_current
    from monitoring.request_log import RequestLogger

    if not is_current(reference_dir) and (evaluation_dir / "per_prompt.csv").is_file():
        echo(f"building the monitoring reference from {evaluation_dir} ...")
        build_reference(evaluation_dir, model, reference_dir)
    if (reference_dir / PROJECTION_FILE).is_file() and Path(model).is_dir():
        return RequestLogger.from_reference(log_dir, reference_dir, model)
    return RequestLogger(log_dir)


def serve_locally(
    model: str,
    backend: str = "auto",
    port: int = 8000,
    predictor_ports: tuple[int, int] | None = (8080, 8081),
    api_key: str | None = None,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    request_log: Callable[[dict], None] | None = None,
    threads: int | None = None,
    reload_interval_s: float = ServeSettings.reload_interval_s,
) -> None:
    """Serve until `stop` is set, Ctrl-C or SIGTERM. `predictor_ports` None: the front alone. `request_log`
    gets every generation the front serves (monitoring's RequestLogger; closed here on the way out).
    `threads`: the front engine's torch threads (see model/torch_threads.py). `reload_interval_s`: how often the
    front checks a model directory for a replacement and swaps it in between requests (serving/reload.py); 0: never.
    The KServe predictor keeps the model it started with."""
    from serving.front.app import FrontSettings, create_app, serve_in_thread
    from serving.launch import PredictorProcess
    from serving.sources import LocalSource

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as stack:
        predictor = None
        if predictor_ports is not None:
            predictor = PredictorProcess(model, backend, http_port=predictor_ports[0], grpc_port=predictor_ports[1])
            stack.callback(predictor.cleanup)
            stack.callback(predictor.stop)
        if request_log is not None and hasattr(request_log, "close"):
            stack.callback(request_log.close)  # after the front stops: its last requests are written
        source = LocalSource(model, backend, threads=threads, reload_interval_s=reload_interval_s)
        app = create_app(source, FrontSettings(api_key=api_key, request_log=request_log))
        url = stack.enter_context(serve_in_thread(app, port=port))
        if predictor is not None:
            predictor.wait_ready()
        echo(f"model      {model}")
        if source.reloader is not None:
            echo(f"reload     a new model in {model} replaces this one (checked every {reload_interval_s:g} s)")
        echo(f"page       {url}/")
        echo(f"API docs   {url}/docs  (REST, SSE /v1/generate/stream, WebSocket /v1/stream; metrics at /metrics)")
        if predictor is not None:
            echo(f"predictor  {predictor.http_url}/v1/models/musicgen:predict (V1), {predictor.http_url}/v2 (V2)")
            echo(f"gRPC       {predictor.grpc_url} (V2; tritonclient.grpc)")
        if request_log is not None:
            echo(f"request log {getattr(request_log, 'log_dir', '')}  (`musicops monitor report`)")
        echo("Ctrl-C stops both.")
        try:
            while not stop.wait(0.5):
                if predictor is not None and predictor.process.poll() is not None:
                    raise RuntimeError(f"the predictor stopped:\n{predictor.log()[-2000:]}")
        except KeyboardInterrupt:
            pass
