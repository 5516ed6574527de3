"""Quality drift of a window of served traffic: how far its audio moved from the evaluation's, and how often it
honours a tempo or key its prompt names.

- Window FAD: every logged request carries a sample of its mel-embedding frames (`mel_frames`, float16 bytes of
  up to MEL_FRAMES x 64 `model.embedders.MelEmbedder` frames). The window's frames are stacked, fitted with a
  Gaussian and compared with the evaluation's statistics of the real held-out audio. The evaluation measured its
  own model against the same statistics, so `fad_ratio` = window FAD / evaluation FAD reads "how much worse than
  when it was evaluated" (about 1 for traffic like the evaluation's; FAD from few frames is biased upwards, so
  small windows read a little high).
- Adherence: requests whose prompt names a tempo ("92 BPM") or a key ("in D minor"), scored as the evaluation
  scores them (`model.music_features.tempo_matches`, `key_score`).

Evidently 0.7 plots only metric results, so `WindowQuality` is a small custom Evidently metric: one value by
name, read from an additional dataset of the report run. Its results are plain `SingleValue`s, which the
Evidently UI plots without importing this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric

from model.embedders import MelEmbedder
from model.frechet import GaussianStats, frechet_distance, gaussian_stats
from model.music_features import key_score, parse_key, tempo_matches
from monitoring.features import frames_from_bytes

if TYPE_CHECKING:
    from evidently.core.report import Context

MEL_DIM = MelEmbedder.dim
QUALITY_DATASET = "musicops_quality"  # the additional dataset WindowQuality reads its values from

# What each quality value is, for the report and the dashboard.
QUALITY_LABELS = {
    "window_fad": "Window FAD (mel) against the real held-out audio",
    "evaluation_fad": "The evaluation's FAD (mel) against the same audio",
    "fad_ratio": "Window FAD / evaluation FAD",
    "tempo_adherence": "Share of tempo prompts whose audio has that tempo",
    "tempo_prompts": "Requests whose prompt names a tempo",
    "key_adherence": "Share of key prompts whose audio is in that key",
    "key_score": "Mean MIREX key score of key prompts",
    "key_prompts": "Requests whose prompt names a key",
}


def window_frames(rows: pd.DataFrame) -> np.ndarray:
    """The window's mel frames stacked [n, 64] float32; requests logged without frames (null) add none."""
    return np.concatenate(
        [np.zeros((0, MEL_DIM), np.float32)] + [frames_from_bytes(b, MEL_DIM) for b in rows["mel_frames"]]
    )


def window_fad(current_rows: pd.DataFrame, reference_stats: GaussianStats) -> float:
    """FAD (mel) between the window's logged frames and `reference_stats`; ValueError when there are too few."""
    frames = window_frames(current_rows)
    frames = frames[np.isfinite(frames).all(axis=1)]  # a float16 overflow would poison the covariance
    if len(frames) < 2:
        raise ValueError(f"the window has {len(frames)} mel frames; a FAD needs at least 2")
    return frechet_distance(gaussian_stats(frames), reference_stats)


@dataclass(frozen=True)
class FadReference:
    """What a window's FAD is compared with: the real held-out audio's mel statistics, and the FAD the evaluation
    measured for its model against them."""

    real: GaussianStats
    evaluation_fad: float

    @classmethod
    def load(cls, directory: str | Path) -> FadReference:
        """From `mel_real.npz` and `mel_model.npz` in a monitoring reference folder (ModelInputError if missing)."""
        directory = Path(directory)
        real = GaussianStats.load(directory / "mel_real.npz")
        model = GaussianStats.load(directory / "mel_model.npz")
        return cls(real, frechet_distance(model, real))


@dataclass(frozen=True)
class Adherence:
    """How served audio honours the tempo or key its prompt names. A prompt whose audio has no tempo or key
    (silence) counts as a miss: the request asked for one and did not get it."""

    tempo_prompts: int
    tempo_matched: int
    key_prompts: int
    key_matched: int  # exactly the named key
    key_score_total: float  # MIREX scores summed (1 same key, 0.5 fifth, 0.3 relative, 0.2 parallel)

    @property
    def tempo_share(self) -> float | None:
        return self.tempo_matched / self.tempo_prompts if self.tempo_prompts else None

    @property
    def key_share(self) -> float | None:
        return self.key_matched / self.key_prompts if self.key_prompts else None

    @property
    def key_score(self) -> float | None:
        return self.key_score_total / self.key_prompts if self.key_prompts else None


def _key(name: Any) -> tuple[int, str] | None:
    if not isinstance(name, str):
        return None
    try:
        return parse_key(name)
    except ValueError:
        return None


def adherence(rows: pd.DataFrame) -> Adherence:
    """Tempo and key adherence of the rows whose prompt names one (rows without are not counted)."""
    tempo_prompts = tempo_matched = key_prompts = key_matched = 0
    key_total = 0.0
    for asked, got in zip(rows["prompt_tempo_bpm"], rows["tempo_bpm"], strict=True):
        if pd.isna(asked) or asked <= 0:
            continue
        tempo_prompts += 1
        tempo_matched += bool(not pd.isna(got) and tempo_matches(float(got), float(asked)))
    for asked_name, got_name in zip(rows["prompt_key"], rows["audio_key"], strict=True):
        asked = _key(asked_name)
        if asked is None:  # no key named (or one this vocabulary cannot score)
            continue
        got = _key(got_name)
        score = key_score(got, asked) if got is not None else 0.0
        key_prompts += 1
        key_matched += score == 1.0
        key_total += score
    return Adherence(tempo_prompts, tempo_matched, key_prompts, key_matched, key_total)


def window_quality(rows: pd.DataFrame, fad: FadReference | None = None) -> dict[str, float]:
    """The window's quality values by name (QUALITY_LABELS); values that are undefined are left out (no frames,
    no FAD reference, no prompt naming a tempo or key)."""
    values: dict[str, float] = {}
    if fad is not None:
        try:
            values["window_fad"] = window_fad(rows, fad.real)
        except ValueError:
            pass  # no frames logged in this window: nothing to compare
        else:
            values["evaluation_fad"] = fad.evaluation_fad
            if fad.evaluation_fad > 0:
                values["fad_ratio"] = values["window_fad"] / fad.evaluation_fad
    result = adherence(rows)
    values["tempo_prompts"] = float(result.tempo_prompts)
    values["key_prompts"] = float(result.key_prompts)
    for name, value in (
        ("tempo_adherence", result.tempo_share),
        ("key_adherence", result.key_share),
        ("key_score", result.key_score),
    ):
        if value is not None:
            values[name] = value
    return values


class WindowQuality(SingleValueMetric):
    """An Evidently metric holding one quality value of the window (`name`, a key of QUALITY_LABELS)."""

    class Config:
        type_alias = "evidently:metric_v2:MusicopsWindowQuality"

    name: str


class WindowQualityCalculation(SingleValueCalculation[WindowQuality]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        # The value rides in an additional dataset rather than in the metric's parameters: parameters become the
        # dashboard series' labels, so a value there would start a new series at every window.
        frame = context.additional_data[QUALITY_DATASET].as_dataframe()
        return self.result(float(frame[self.metric.name].iloc[0]))

    def display_name(self) -> str:
        return QUALITY_LABELS.get(self.metric.name, self.metric.name)


def quality_inputs(values: Mapping[str, float]) -> tuple[list[WindowQuality], dict[str, Dataset]]:
    """The Evidently metrics and the additional dataset that put `values` into a report run."""
    finite = {name: float(value) for name, value in values.items() if math.isfinite(value)}
    frame = pd.DataFrame({name: [value] for name, value in finite.items()})
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=list(finite)))
    return [WindowQuality(name=name) for name in finite], {QUALITY_DATASET: dataset}
