"""The evaluation's per-clip analysis gives the same rows in worker processes as in-process."""

from __future__ import annotations

import math

import numpy as np

from components.evaluation.analysis import analyse_clips

RATE = 32000


def _clip(bpm: float, pitch: float, seconds: float = 4.0) -> np.ndarray:
    """A tone with a click on each beat: a tempo and a pitch to find."""
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.3 * np.sin(2 * np.pi * pitch * t)
    for beat in np.arange(0, seconds, 60 / bpm):
        start = int(beat * RATE)
        audio[start : start + 400] += np.hanning(800)[400:] * 0.8
    return audio.astype(np.float32)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def test_rows_from_worker_processes_equal_the_in_process_ones_in_order():
    labels = {"tempo": 120, "root": 9, "mode": "minor"}
    clips = [_clip(bpm, pitch) for bpm, pitch in ((120, 440.0), (90, 261.6), (140, 329.6))]
    tasks = [(clip, RATE, labels, clip[RATE:] if i == 0 else None) for i, clip in enumerate(clips)]
    alone = analyse_clips(tasks, workers=1)
    shared = analyse_clips(tasks, workers=2)
    assert len(shared) == 3 and all(_same(a, b) for a, b in zip(alone, shared, strict=True))
    assert "continued_tempo_match" in shared[0] and "continued_tempo_match" not in shared[1]
    # In order: the clips' tempi differ, and so do their rows.
    assert len({round(row["tempo_bpm"]) for row in shared}) > 1
