"""The evaluation report: one self-contained HTML page (images and audio inline as data URIs).

It opens from a file, an artifact store or a Kubeflow HTML artifact alike, with nothing to fetch.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATE = "report.html.j2"


def audio_uri(audio: np.ndarray, sample_rate: int) -> str:
    """MP3 (about 60 kB for 10 s, played by every browser) as a data URI, for the page's audio players."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1).astype(np.float32), sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    return "data:audio/mpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def spectrogram_uri(audio: np.ndarray, sample_rate: int) -> str:
    """A log-mel spectrogram as a PNG data URI."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=sample_rate, n_mels=64, hop_length=512)
    figure, axes = plt.subplots(figsize=(4.0, 1.5), dpi=80)
    axes.imshow(librosa.power_to_db(mel, ref=np.max, top_db=80), origin="lower", aspect="auto", cmap="magma")
    axes.set_axis_off()
    figure.subplots_adjust(0, 0, 1, 1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def number(value: Any, digits: int = 3) -> str:
    """A table cell: significant digits, an en dash for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if value == 0 or math.isinf(value):
            return f"{value:g}"
        # `digits` significant digits in fixed notation (1743, 0.0417): exponents are hard to scan in a table.
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f}"
    return str(value)


def summary_chart_uri(metrics: dict[str, Any]) -> str:
    """Bars of the model beside its baselines: FAD per embedder, and each adherence share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"model": "#1565c0", "start": "#f9a825", "untrained": "#9e9e9e", "codec": "#a1887f", "real": "#2e7d32"}
    panels = [(f"FAD ({name}) ↓", values) for name, values in metrics["fad"].items()]
    panels += [
        (f"{name} ↑", metrics["adherence"][name])
        for name in ("tempo_match", "continued_tempo_match", "key_score", "label_accuracy")
        if name in metrics["adherence"]
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.4), dpi=90)
    for ax, (title, values) in zip(np.atleast_1d(axes), panels, strict=True):
        names = [name for name in colours if name in values]  # `start` only for a fine-tuned model
        ax.bar(names, [values[n] for n in names], color=[colours[n] for n in names])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_report(path: Path, context: dict[str, Any]) -> Path:
    """Write the report page to `path` from the template and `context` (see evaluate.py for its keys)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["num"] = number
    path.write_text(environment.get_template(TEMPLATE).render(**context))
    return path
