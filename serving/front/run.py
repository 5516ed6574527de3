"""One generation as the front sees it: its chunks, its timing from the request's arrival, the statistics a
client gets at the end and the record the request log gets. Its audio's wire encodings are in serving/wire.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.front.request import GenerateRequest
from serving.sources import GenerationStream


@dataclass
class Run:
    """Filled as chunks arrive; `stats()` is what the client sees, `record()` what the request log gets."""

    route: str
    request: GenerateRequest
    sample_rate: int
    started: float = field(default_factory=time.perf_counter)
    stream: GenerationStream | None = None
    first_chunk_s: float | None = None
    last_chunk_s: float = 0.0
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    cancelled: bool = False

    def add(self, chunk: np.ndarray) -> None:
        now = time.perf_counter() - self.started
        if self.first_chunk_s is None:
            self.first_chunk_s = now
        self.last_chunk_s = now
        self.chunks.append(chunk)
        self.samples += chunk.size

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)

    def stats(self) -> dict[str, Any]:
        """Seed and timing; latencies count from the request's arrival, so time waiting for a slot shows."""
        audio_s = self.samples / self.sample_rate
        stats = self.stream.stats if self.stream is not None else None
        return {
            "seed": stats.seed if stats else None,
            "first_chunk_ms": _ms(self.first_chunk_s),
            "generation_ms": _ms(self.last_chunk_s),
            "queued_ms": _ms(stats.queued_s) if stats else None,  # in the source's own queue (the engine's)
            "real_time_factor": round(audio_s / self.last_chunk_s, 3) if self.last_chunk_s > 0 else 0.0,
            "samples": self.samples,
            "audio_seconds": round(audio_s, 4),
            "sample_rate": self.sample_rate,
            "batch_size": stats.batch_size if stats else 0,
            "cancelled": self.cancelled,
            "model": stats.model if stats else None,  # the served model's fingerprint (serving/reload.py)
        }

    def record(self) -> dict[str, Any]:
        """What the request log hook gets: prompt, parameters, seed, timing and the audio (float32, mono)."""
        stats = self.stats()
        return {
            "time": time.time(),
            "route": self.route,
            "prompt": self.request.prompt,
            "params": self.request.model_dump(exclude={"api_key"}),
            "seed": stats["seed"],
            "timing": {key: stats[key] for key in ("first_chunk_ms", "generation_ms", "queued_ms", "real_time_factor")},
            "cancelled": self.cancelled,
            "sample_rate": self.sample_rate,
            "audio": self.audio(),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
