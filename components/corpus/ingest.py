"""Ingest a folder of the user's audio: captions from a CSV/JSONL file or a `.txt` beside each file,
resampled (soxr) to the model's rate, mixed to mono, cut into clips of the configured length.

A captions table may also carry the rendered corpus's labels (`LABEL_COLUMNS`: genre, tempo, key, mood) as
optional columns; a clip of a labelled file gets them, so evaluation can measure prompt adherence on it.

One function serves the main corpus folder (`data.source`) and each named data source (`data.sources`).

Clips of one file share its `source`, and whole files are assigned to splits, so no piece of a test
recording is trained on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.corpus.manifest import Clip, split_counts
from model.audio import read_audio, write_audio
from model.music_features import parse_key
from settings.params import DataParams, ParamsError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
# The rendered corpus's labels (components/corpus/compose.py) a captions table may carry as optional columns, in
# the order a written table puts them: the ones evaluation's adherence and its genre classifier read.
LABEL_COLUMNS = ("genre", "tempo", "key", "mood")


def find_audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def read_captions(folder: Path, files: list[Path], table: str | None) -> dict[Path, str]:
    """Caption per audio file: from `table` (CSV with file,caption columns, or JSONL with those keys;
    file paths relative to `folder`), else from `<file>.txt`. Names every file left without one."""
    captions: dict[Path, str] = {}
    if table:
        rows = _table_rows(Path(table))
        for number, row in enumerate(rows, start=1):
            if "file" not in row or "caption" not in row:
                raise ParamsError(f"{table}: row {number} needs 'file' and 'caption'")
            captions[(folder / row["file"]).resolve()] = str(row["caption"]).strip()
    else:
        for file in files:
            sidecar = file.with_suffix(".txt")
            if sidecar.is_file():
                captions[file.resolve()] = sidecar.read_text().strip()
    missing = [str(f.relative_to(folder)) for f in files if not captions.get(f.resolve())]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ParamsError(f"no caption for {len(missing)} audio file(s): {shown}")
    return {f: captions[f.resolve()] for f in files}


def read_labels(folder: Path, files: list[Path], table: str | None) -> dict[Path, dict[str, Any]]:
    """Labels per audio file from `table`'s optional `LABEL_COLUMNS` (empty for every file without a table: a
    `.txt` caption carries none). An empty cell is no label. `tempo` is a float (BPM); `key` is spelled as the
    rendered corpus spells it ('A minor', 'B-flat major') and brings its `root` and `mode`, the labels evaluation's
    key adherence reads. A tempo or key that cannot be read is a ParamsError naming the table, row and file."""
    labels: dict[Path, dict[str, Any]] = {}
    if table:
        for number, row in enumerate(_table_rows(Path(table)), start=1):
            where = f"{table}: row {number} ({row.get('file')})"
            labels[(folder / str(row.get("file"))).resolve()] = _row_labels(row, where)
    return {f: labels.get(f.resolve(), {}) for f in files}


def _row_labels(row: dict[str, Any], where: str) -> dict[str, Any]:
    # A CSV row shorter than its header has None cells, and JSONL may hold null or numbers: all read as text.
    cells = {name: "" if row.get(name) is None else str(row[name]).strip() for name in LABEL_COLUMNS}
    labels: dict[str, Any] = {name: text for name, text in cells.items() if text}
    if "tempo" in labels:
        try:
            labels["tempo"] = float(labels["tempo"])
            if not math.isfinite(labels["tempo"]) or labels["tempo"] <= 0:
                raise ValueError  # 'nan', 'inf' and '-90' parse, yet no clip has such a tempo
        except ValueError:
            raise ParamsError(f"{where}: tempo {cells['tempo']!r} is not a positive number of BPM") from None
    if "key" in labels:
        try:
            labels["root"], labels["mode"] = parse_key(labels["key"])
        except ValueError:
            raise ParamsError(
                f"{where}: key {cells['key']!r} is not a key name such as 'A minor', 'F-sharp major' or 'B-flat major'"
            ) from None
    return labels


def _table_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise ParamsError(f"captions file {path} does not exist")
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _split_of_files(files: list[Path], folder: Path, params: DataParams) -> dict[Path, str]:
    # Files in a seeded, stable order (a hash of their relative path): the first ones go to test.
    def rank(file: Path) -> str:
        return hashlib.sha256(f"{params.seed}:{file.relative_to(folder)}".encode()).hexdigest()

    ordered = sorted(files, key=rank)
    counts = split_counts(len(files), params.splits)
    labels = ["test"] * counts["test"] + ["valid"] * counts["valid"] + ["train"] * counts["train"]
    return dict(zip(ordered, labels, strict=True))


def ingest_folder(
    params: DataParams,
    folder: Path,
    progress: Callable[[int], None] | None = None,
    source_folder: Path | None = None,
    captions: str | Path | None = None,
    name: str | None = None,
) -> list[Clip]:
    """Cut every captioned audio file of a folder into clips written to `folder`/audio.

    By default the folder is the main corpus's `params.source` with `params.captions`. For a named data source
    (settings.data_sources) pass its `source_folder`, its `captions` table and its `name`: clip ids and sources are
    then prefixed with the name (so two folders never collide) and each clip is labelled `dataset: <name>` (how
    evaluation tells the new data's test split from the main corpus's). Beside it, each clip gets the labels the
    captions table gives its file (`read_labels`). Files are split per folder by one rule.
    """
    if source_folder is None:
        source_folder, captions = Path(params.source), params.captions
        if not source_folder.is_dir():
            raise ParamsError(f"data.source {source_folder} is neither 'rendered' nor a folder")
    files = find_audio(source_folder)
    if not files:
        where = f"data source {name!r} ({source_folder})" if name else str(source_folder)
        raise ParamsError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {where}")
    texts = read_captions(source_folder, files, str(captions) if captions else None)
    file_labels = read_labels(source_folder, files, str(captions) if captions else None)
    splits = _split_of_files(files, source_folder, params)
    (folder / "audio").mkdir(exist_ok=True)
    clip_samples = round(params.clip_seconds * params.sample_rate)
    shortest = round(params.min_clip_seconds * params.sample_rate)
    prefix = f"{name}-" if name else ""
    clips = []
    for number, file in enumerate(files):
        audio = read_audio(file, params.sample_rate)
        source = str(Path(name or "") / file.relative_to(source_folder))
        for part, start in enumerate(range(0, len(audio), clip_samples)):
            piece = audio[start : start + clip_samples]
            if len(piece) < shortest:
                break
            clip_id = f"{prefix}file{number:05d}-{part:03d}"
            path = Path("audio") / f"{clip_id}.{params.audio_format}"
            if not (folder / path).exists():
                write_audio(folder / path, piece, params.sample_rate)
            clips.append(
                Clip(
                    id=clip_id,
                    path=str(path),
                    duration=len(piece) / params.sample_rate,
                    sample_rate=params.sample_rate,
                    caption=texts[file],
                    split=splits[file],
                    source=source,
                    labels={**file_labels[file], **({"dataset": name} if name else {})},
                )
            )
        if progress:
            progress(1)
    return clips
