"""What the evaluation writes (components/evaluate.py measures): metrics.json and decision.json, the per-prompt
table, the model's samples, the reference monitoring compares served traffic with, and the self-contained
report.html (its template: report.html.j2 beside this file)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from components.corpus.manifest import Clip
from components.evaluation.adherence import ADHERENCE
from components.evaluation.gate import DECISION_FILE, METRICS_FILE, Decision
from components.evaluation.outliers import FAD_CONTRIBUTION, worst_prompts
from components.evaluation.report import audio_uri, render_report, spectrogram_uri, summary_chart_uri
from model.atomic_io import atomic_directory
from model.audio import write_audio
from model.audio_quality import FEATURES
from model.frechet import gaussian_stats
from settings.params import EvaluateParams


def write_outputs(
    out_dir: Path,
    metrics: dict[str, Any],
    decision: Decision,
    rows: list[dict[str, Any]],
    audio: dict[str, list[np.ndarray]],
    frames: dict[str, dict[str, list[np.ndarray]]],
    tests: list[Clip],
    generator: Any,
    params: EvaluateParams,
    embedders: dict[str, Any],
    systems: tuple[str, ...],
) -> None:
    """Publish the evaluation in `out_dir` at once (an atomic folder): nothing half-written is left behind."""
    import pandas as pd

    rate = generator.sample_rate
    with atomic_directory(out_dir) as staging:
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        (staging / DECISION_FILE).write_text(json.dumps(decision.to_json(), indent=2) + "\n")
        table = pd.DataFrame(rows)
        table.to_csv(staging / "per_prompt.csv", index=False)
        (staging / "samples").mkdir()
        for clip, samples in zip(tests, audio["model"], strict=True):
            write_audio(staging / "samples" / f"{clip.id}.wav", samples, rate)
        # What monitoring compares served traffic with: features of the generated audio per prompt, and
        # each embedder's statistics of generated and real held-out audio.
        reference = staging / "reference"
        reference.mkdir()
        table[table["system"] == "model"].to_csv(reference / "features.csv", index=False)
        for name, per_system in frames.items():
            for system in ("model", "real"):
                gaussian_stats(np.concatenate(per_system[system])).save(reference / f"{name}_{system}.npz")
        context = _report_context(metrics, decision, rows, audio, tests, generator, params, embedders, systems)
        render_report(staging / "report.html", context)


def _report_context(metrics, decision, rows, audio, tests, generator, params, embedders, systems) -> dict[str, Any]:
    rate = generator.sample_rate
    shown = tests[: params.report_samples]
    samples = [
        {
            "id": clip.id,
            "caption": clip.caption,
            "systems": {
                system: {
                    "audio": audio_uri(audio[system][i], rate),
                    "spectrogram": spectrogram_uri(audio[system][i], rate),
                }
                for system in systems
            },
        }
        for i, clip in enumerate(tqdm(shown, desc="report", unit="prompt"))
    ]
    index = {clip.id: i for i, clip in enumerate(tests)}
    outliers = {
        name: {
            "label": FAD_CONTRIBUTION[0] if name == "fad_contribution" else ADHERENCE[name][0],
            "prompts": [prompt | {"audio": audio_uri(audio["model"][index[prompt["id"]]], rate)} for prompt in worst],
        }
        for name, worst in worst_prompts(rows).items()
    }
    return {
        "metrics": metrics,
        "decision": decision.to_json(),
        "outliers": outliers,
        "card": asdict(generator.card),
        "embedders": {name: embedder.description for name, embedder in embedders.items()},
        "adherence_info": ADHERENCE,
        "features": {name: asdict(info) for name, info in FEATURES.items()},
        "rows": rows,
        "samples": samples,
        "summary_chart": summary_chart_uri(metrics),
        "systems": systems,
        "params": asdict(params),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
