"""What every route of the front shares, in one object: the audio source, the settings, the request models, admission
and metrics (`Front`), and the settings themselves (`FrontSettings`).

Its own module so that the routes (serving/front/app.py) and the WebSocket protocol (serving/front/ws.py) both
import it and neither imports the other: the dependency points one way, app -> ws -> state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from model.errors import ModelInputError, first_line
from serving.engine import EngineBusy, EngineStopped
from serving.front.admission import Admission, Lease, Overloaded
from serving.front.metrics import FrontMetrics
from serving.front.request import request_models
from serving.front.run import Run
from serving.sources import AudioSource, LocalSource, SourceError

log = logging.getLogger(__name__)


@dataclass
class FrontSettings:
    """The front's limits and switches; the model's own limits (e.g. its longest clip) apply too."""

    max_concurrent_streams: int = 8  # generations at once: the engine's batch (compatible ones decode together)
    max_queue: int = 16  # requests waiting for a slot; one more is refused with 429
    retry_after_s: int = 2
    api_key: str | None = None  # None: no authentication
    cors_origins: list[str] = field(default_factory=list)
    max_prompt_chars: int = 500
    max_duration: float = 30.0
    default_duration: float = 8.0
    # Called off the event loop with one dict per generation (see Run.record: prompt, params, seed, timing,
    # cancelled, audio): the monitoring store's hook. If it raises, the error is logged and serving goes on.
    request_log: Callable[[dict[str, Any]], None] | None = None
    title: str = "musicops"


class Front:
    """What every route shares: the audio source, the settings, the request models, admission and metrics."""

    def __init__(self, source: AudioSource, settings: FrontSettings) -> None:
        self.source, self.settings = source, settings
        model_max = source.max_duration
        self.max_duration = settings.max_duration if model_max is None else min(settings.max_duration, model_max)
        self.default_duration = min(settings.default_duration, self.max_duration)
        self.request_model, self.query_model = request_models(
            settings.max_prompt_chars, self.max_duration, self.default_duration
        )
        self.admission = Admission(settings.max_concurrent_streams, settings.max_queue)
        reloader = source.reloader if isinstance(source, LocalSource) else None
        self.metrics = FrontMetrics(self.admission, reloads=None if reloader is None else reloader.counts.copy)
        self._logging: set[asyncio.Future] = set()

    def model(self) -> dict[str, Any] | None:
        """Which model serves now (path, fingerprint, load time, its card's dates); None for a remote source."""
        return self.source.version.to_json() if isinstance(self.source, LocalSource) else None

    def key_ok(self, *candidates: str | None) -> bool:
        """Whether any candidate is the API key (always, when none is set); compared in constant time."""
        if self.settings.api_key is None:
            return True
        expected = self.settings.api_key.encode()
        return any(c is not None and secrets.compare_digest(c.encode(), expected) for c in candidates)

    async def admit(self, run: Run) -> Lease:
        """Wait for a slot (or raise Overloaded), then start the run's generation."""
        lease = await self.admission.enter()
        try:
            run.stream = lease.stream = await self.source.stream(run.request.prompt, run.request.params())
        except BaseException:
            lease.release()
            raise
        return lease

    def finish(self, run: Run) -> None:
        """Observe the run's metrics and hand its record to the request log without making anyone wait."""
        if run.first_chunk_s is not None:
            self.metrics.first_chunk.labels(run.route).observe(run.first_chunk_s)
        if run.samples and not run.cancelled:
            self.metrics.real_time_factor.labels(run.route).observe(run.stats()["real_time_factor"])
        hook = self.settings.request_log
        if hook is None or run.stream is None:
            return
        future = asyncio.get_running_loop().run_in_executor(None, _call_hook, hook, run.record())
        self._logging.add(future)
        future.add_done_callback(self._logging.discard)

    async def drain_logs(self, timeout_s: float = 30.0) -> None:
        """Wait (at most `timeout_s`) for the request log hooks still running: on shutdown, so no record is lost."""
        if self._logging:
            await asyncio.wait(set(self._logging), timeout=timeout_s)

    def problem(self, error: BaseException) -> tuple[int, str]:
        """(HTTP status, message) for what can go wrong once a request is valid; the WebSocket protocol turns the
        status into its close code (serving/front/ws.py)."""
        if isinstance(error, Overloaded | EngineBusy):
            wait = self.settings.retry_after_s
            return 429, f"busy: {first_line(error)}; try again in {wait} s"
        if isinstance(error, EngineStopped):
            return 503, "the server is shutting down"
        if isinstance(error, ModelInputError):
            return 422, first_line(error)
        if isinstance(error, SourceError):
            return 502, first_line(error)
        return 500, f"generation failed: {first_line(error)}"


def _call_hook(hook: Callable[[dict[str, Any]], None], record: dict[str, Any]) -> None:
    try:
        hook(record)
    except Exception:  # a boundary: a broken store must not break serving
        log.exception("the request log hook failed")
