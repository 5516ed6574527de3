"""`musicops demo`: the retraining loop on the embedded default, end to end.

The base model (models/base) was trained on every rendered genre but the ones params.yaml's `data.genres` leaves
out. The demo renders the first genre left out and adds it as a data source (`musicops data render` and
`musicops data add`: Great Expectations, DVC); `dvc repro` then prepares the corpus with it, fine-tunes the base
model on old and new data together (`train.init_from`, `train.adapter`), evaluates the result beside the base
model on the old test split and on the new genre's, gates it, and exports it to ONNX and a Triton repository.
A model the gate passes is promoted. A second run finds the genre already added and only re-runs what changed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from settings.data_sources import source_dir
from settings.params import DataParams, load_section

# Clips of the new genre: with data.splits' 10% test share, about ten test prompts, enough for the before/after
# gains' P-values to tell a learnt genre from chance.
NEW_GENRE_CLIPS = 100


def new_genre(data: DataParams) -> str | None:
    """The genre the demo adds as new data: the first (alphabetically) the rendered corpus leaves out of
    data.genres; None when the corpus renders every genre or is the user's own folder."""
    from components.corpus.genres import GENRES

    if data.source != "rendered" or data.genres is None:
        return None
    left_out = sorted(set(GENRES) - set(data.genres))
    return left_out[0] if left_out else None


def source_name(genre: str) -> str:
    """The data source's name for a genre ("hip hop" -> "hip-hop": a source name is one plain word)."""
    return genre.replace(" ", "-")


def add_new_genre(params_file: Path, echo: Callable[[str], Any], clips: int = NEW_GENRE_CLIPS) -> str | None:
    """Render the genre the base model never heard and add it as a data source, unless it is listed already.
    Returns the source's name (None: no genre is left out, the demo fine-tunes on the corpus alone)."""
    from musicops.data_cli import add, render

    data = load_section(params_file, "data")
    genre = new_genre(data)
    if genre is None:
        return None
    name = source_name(genre)
    if name in data.sources and source_dir(name).is_dir():
        echo(f"new data: {genre} is already a data source ({source_dir(name)})")
        return name
    echo(f"new data: {genre}, a genre the base model never heard, rendered and added as the data source {name!r}")
    with tempfile.TemporaryDirectory(prefix="musicops-demo-") as work:
        folder = Path(work) / name
        render(folder, genre=genre, count=clips, seed=None, params=params_file)
        add(folder, captions=None, name=name, replace_existing=True, params=params_file)
    return name
