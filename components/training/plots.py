"""Loss curves as a PNG, read from dvclive's TSV files (offline; `dvc plots show` draws the same data
as an HTML page when a browser can reach its chart library)."""

from __future__ import annotations

import csv
from pathlib import Path


def _series(tsv: Path) -> tuple[list[float], list[float]]:
    with open(tsv, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    value = next(key for key in rows[0] if key not in ("step", "timestamp"))
    return [float(r["step"]) for r in rows], [float(r[value]) for r in rows]


def plot_losses(dvclive_dir: Path, out: Path, baselines: dict[str, float] | None = None) -> Path:
    """Train and validation loss against step, with horizontal lines for the baselines."""
    import matplotlib

    matplotlib.use("Agg")  # no display here: render straight to the file
    import matplotlib.pyplot as plt

    metrics = dvclive_dir / "plots" / "metrics"
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, style in (("train/loss.tsv", "-"), ("valid/loss.tsv", "o-")):
        if (metrics / name).is_file():
            steps, values = _series(metrics / name)
            axis.plot(steps, values, style, label=name.removesuffix(".tsv").replace("/", " "), linewidth=1.2)
    for label, level in (baselines or {}).items():
        axis.axhline(level, linestyle="--", linewidth=0.8, color="grey")
        axis.annotate(label, (0, level), textcoords="offset points", xytext=(4, 3), fontsize=8, color="grey")
    axis.set_xlabel("step")
    axis.set_ylabel("cross-entropy (nats per code)")
    axis.set_title("MusicGen decoder training")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out
