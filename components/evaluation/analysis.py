"""The per-clip analysis each evaluation row starts from: the audio-quality features, tempo and key adherence
from basic-pitch's notes, and the tempo of what continued a real opening.

It is a pure function of a clip's audio and labels, and most of it runs on one core (librosa's HPSS median
filter, the beat tracker, the notes' post-processing), so `evaluate.workers` processes share the clips; the
rows come back in the clips' order, equal to the in-process ones.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
from tqdm import tqdm

from components.evaluation.adherence import adherence, continuation_adherence
from model.audio_quality import audio_features

# (audio, sample rate, labels, the continuation after the clip's real opening or None)
Task = tuple[np.ndarray, int, dict[str, Any], np.ndarray | None]


def analyse_clip(task: Task) -> dict[str, Any]:
    """One clip's features and adherence."""
    audio, rate, labels, continued = task
    features = audio_features(audio, rate)
    row = features | adherence(audio, rate, labels, features["tempo_bpm"])
    if continued is not None:
        row |= continuation_adherence(continued, rate, labels)
    return row


def analyse_clips(tasks: list[Task], workers: int) -> list[dict[str, Any]]:
    """Each task's `analyse_clip`, in order, in `workers` processes (1: in this one)."""
    bar = {"total": len(tasks), "desc": "analyse", "unit": "clip"}
    if workers <= 1 or len(tasks) < 2:
        return [analyse_clip(task) for task in tqdm(tasks, **bar)]
    # spawn, not fork: the parent has torch's OpenMP threads running, which a forked child cannot use safely.
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn")) as pool:
        return list(tqdm(pool.map(analyse_clip, tasks), **bar))
