"""A folder of the user's audio for ingest tests: distinct tones (so no clip is silent or repeated) with
captions as `.txt` sidecars or one captions.csv table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int, frequency: float = 330.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def audio_folder(
    folder: Path, files: int, seconds: float = 1.0, rate: int = 32_000, table: str | None = None, word: str = "song"
) -> Path:
    """`files` WAV tones `<word>-<n>.wav` under `folder`, captioned "a calm <word> number <n>"; captions go to
    `table` (a CSV file name inside `folder`, file,caption) when given, else to a `.txt` beside each file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(files):
        name = f"{word}-{number}.wav"
        sf.write(str(folder / name), tone(seconds, rate, 220.0 + 40 * number), rate)
        caption = f"a calm {word} number {number}"
        if table:
            rows.append({"file": name, "caption": caption})
        else:
            (folder / name).with_suffix(".txt").write_text(caption + "\n")
    if table:
        with open(folder / table, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "caption"])
            writer.writeheader()
            writer.writerows(rows)
    return folder
