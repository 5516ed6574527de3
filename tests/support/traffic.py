"""Synthetic request-log rows in the schema of monitoring/schema.py, for the monitoring tests.

`traffic(n, seed)` draws requests like the evaluation's reference: English prompts about known genres, some
naming a tempo or a key, and audio features and mel frames from fixed distributions. `shift` moves one aspect:

- "language": prompts in Russian (mostly non-ASCII letters; the English text encoder puts them elsewhere);
- "genres": genres the corpus never had (their prompt embeddings land away from the known ones);
- "audio": louder and brighter audio (loudness, spectral centroid and bandwidth, clipping; mel frames too).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.music_features import key_name
from monitoring.features import prompt_statistics
from monitoring.reference import PROVENANCE_FILE
from monitoring.request_log import arrow_schema
from monitoring.schema import AUDIO_WINDOW_S, COLUMNS, MEL_FRAMES, PROMPT_EMBEDDING_COMPONENTS

MEL_DIM = 64
GENRES = ["jazz", "rock", "ambient", "hip hop", "classical", "funk", "electronic"]
UNSEEN_GENRES = ["polka", "gamelan", "mariachi", "k-pop", "drum and bass", "bossa nova"]
MOODS = ["calm", "upbeat", "dark", "happy", "dreamy"]
INSTRUMENTS = ["piano", "guitar", "saxophone", "synth", "strings", "drums"]
RUSSIAN = ["спокойный джаз с фортепиано", "мрачный рок с гитарой", "весёлая электронная музыка", "лёгкий эмбиент"]
SHIFTS = ("language", "genres", "audio")

SCHEMA = arrow_schema()  # the logger's own
_SEQUENCE = itertools.count()


def _genre_centres(names: list[str], seed: int, offset: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(offset, 1.0, PROMPT_EMBEDDING_COMPONENTS) for name in names}


# Fixed across calls, so reference and current windows share one world.
_KNOWN = _genre_centres(GENRES, 11, 0.0)
_UNSEEN = _genre_centres(UNSEEN_GENRES, 12, 3.0)
_MEL_MEAN = np.linspace(-1.0, -6.0, MEL_DIM)
_MEL_FACTOR = np.random.default_rng(13).normal(0.0, 0.3, (MEL_DIM, 8))


def mel_frames(rng: np.random.Generator, count: int, shift: float = 0.0) -> np.ndarray:
    """Frames like the reference's ([count, 64] float32); `shift` > 0 makes them louder and brighter."""
    latent = rng.normal(size=(count, 8)) @ _MEL_FACTOR.T
    noise = rng.normal(0.0, 0.4, (count, MEL_DIM))
    return (_MEL_MEAN + shift * (1.0 + np.linspace(0.0, 2.0, MEL_DIM)) + latent + noise).astype(np.float32)


def _row(rng: np.random.Generator, shift: set[str], when: datetime) -> dict:
    tempo = key = None
    if "language" in shift:
        prompt = str(rng.choice(RUSSIAN))
        centre = np.full(PROMPT_EMBEDDING_COMPONENTS, -3.0)
    else:
        genres, centres = (UNSEEN_GENRES, _UNSEEN) if "genres" in shift else (GENRES, _KNOWN)
        genre = str(rng.choice(genres))
        prompt = f"{rng.choice(MOODS)} {genre} with {rng.choice(INSTRUMENTS)}"
        centre = centres[genre]
        if rng.random() < 0.4:
            tempo = float(rng.integers(70, 160))
            prompt += f" at {tempo:.0f} BPM"
        if rng.random() < 0.3:
            key = key_name(int(rng.integers(12)), str(rng.choice(["major", "minor"])))
            prompt += f" in {key}"
    loud = "audio" in shift
    if tempo is not None and rng.random() < 0.8:
        tempo_bpm = tempo * (1.0 + rng.normal(0.0, 0.01))
    else:
        tempo_bpm = float(rng.uniform(70, 160))
    audio_key = key if key is not None and rng.random() < 0.6 else key_name(int(rng.integers(12)), "major")
    duration = float(rng.choice([5.0, 8.0, 10.0]))
    frames = mel_frames(rng, MEL_FRAMES, shift=1.5 if loud else 0.0)
    latency = duration * float(rng.uniform(0.3, 0.6))
    return {
        "time": when,
        "route": "/v1/generate",
        "prompt": prompt,
        "duration": duration,
        "guidance_scale": 3.0,
        "temperature": 1.0,
        "top_k": 250,
        "top_p": 0.0,
        "seed": int(rng.integers(1 << 31)),
        "cancelled": False,
        "latency_s": latency,
        "first_chunk_s": latency / 5,
        "real_time_factor": duration / latency,
        **prompt_statistics(prompt),  # the logger's own, so the tempo and key are parsed from the text
        **{f"prompt_embedding_{i}": float(rng.normal(centre[i], 0.4)) for i in range(PROMPT_EMBEDDING_COMPONENTS)},
        "duration_s": duration,
        "loudness_lufs": float(rng.normal(-10.0 if loud else -18.0, 2.5)),
        "silence_share": float(rng.beta(1, 20)),
        "clipping_share": float(rng.exponential(0.01 if loud else 1e-4)),
        "harmonic_percussive_db": float(rng.normal(4.0, 3.0)),
        "tempo_bpm": tempo_bpm,
        "tempo_stability": float(rng.beta(8, 2)),
        "pitch_stability": float(rng.beta(6, 3)),
        "spectral_contrast_db": float(rng.normal(17.0 if loud else 20.0, 2.0)),
        "spectral_centroid_hz": float(rng.normal(3300.0 if loud else 1800.0, 300.0)),
        "spectral_bandwidth_hz": float(rng.normal(2800.0 if loud else 2000.0, 250.0)),
        "audio_key": audio_key,
        "mel_frames": frames.astype(np.float16).tobytes(),
    }


def traffic(
    n: int,
    seed: int = 0,
    shift: Iterable[str] = (),
    end: datetime | None = None,
    span: timedelta = timedelta(minutes=50),
) -> pd.DataFrame:
    """`n` requests spread over `span` before `end` (default now), in the schema's columns and order."""
    shift = set(shift)
    if shift - set(SHIFTS):
        raise ValueError(f"unknown shifts {sorted(shift - set(SHIFTS))}; choose from {SHIFTS}")
    rng = np.random.default_rng(seed)
    end = end or datetime.now(UTC)
    times = sorted(end - span * float(f) for f in rng.uniform(0.0, 1.0, n))
    frame = pd.DataFrame([_row(rng, shift, when) for when in times], columns=list(COLUMNS))
    return frame


def write_log(frame: pd.DataFrame, log_dir: Path, parts: int = 3) -> list[Path]:
    """Write `frame` as Parquet part files in the log's schema, named as the front's logger names them
    (part-<time of writing>Z-<pid>-<sequence>.parquet, written after the last row it holds)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for chunk in np.array_split(np.arange(len(frame)), parts):
        rows = frame.iloc[chunk]
        written = pd.to_datetime(rows["time"], utc=True).max() + timedelta(seconds=1)
        path = log_dir / f"part-{written:%Y%m%dT%H%M%S%f}Z-0-{next(_SEQUENCE)}.parquet"
        pq.write_table(pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False), path)
        paths.append(path)
    return paths


def write_reference(frame: pd.DataFrame, evaluation_dir: Path, seed: int = 99) -> Path:
    """A monitoring reference folder as build_reference leaves it: reference.parquet, its provenance and the mel
    statistics (real held-out audio, and the evaluated model's a little off it, so the evaluation's FAD is not zero)."""
    from model.frechet import gaussian_stats

    out = evaluation_dir / "monitoring"
    out.mkdir(parents=True, exist_ok=True)
    pa_table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    pq.write_table(pa_table, out / "reference.parquet")
    (out / PROVENANCE_FILE).write_text(json.dumps({"rows": len(frame), "audio_window_s": AUDIO_WINDOW_S}))
    rng = np.random.default_rng(seed)
    gaussian_stats(mel_frames(rng, 4000)).save(out / "mel_real.npz")
    gaussian_stats(mel_frames(rng, 4000, shift=0.1)).save(out / "mel_model.npz")
    return out
