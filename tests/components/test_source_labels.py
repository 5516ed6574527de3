"""Labels travel with a folder's captions: a captions table's optional genre, tempo, key and mood columns become
its clips' labels (tempo a float, the key's root and mode beside it, an empty cell no label), for a data source
and for the main corpus folder alike; a tempo or key that cannot be read is named with its table, row and file;
`.txt` captions carry none; `musicops data add`'s copy keeps the columns."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from components.corpus.ingest import LABEL_COLUMNS, ingest_folder, read_labels
from musicops.data_cli import copy_source
from settings.data_sources import CAPTIONS_FILE
from settings.params import DataParams, ParamsError
from tests.support.audio_folder import audio_folder

pytestmark = pytest.mark.integration

MICRO = DataParams(clip_seconds=1.0, min_clip_seconds=0.5, sample_rate=16_000, seed=2)


def _labelled_table(folder: Path, labels: list[dict[str, str]], columns: list[str]) -> Path:
    """Rewrite `folder`'s captions.csv: its file and caption columns, then `columns` filled from `labels`."""
    table = folder / CAPTIONS_FILE
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "caption", *columns])
        writer.writeheader()
        for row, extra in zip(rows, labels, strict=True):
            writer.writerow({"file": row["file"], "caption": row["caption"], **extra})
    return table


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three one-second tones whose captions.csv labels the first fully, the second partly, the third not at all."""
    folder = audio_folder(tmp_path / "mine", files=3, table=CAPTIONS_FILE, word="cumbia")
    labels = [
        {"genre": "cumbia", "tempo": "96", "key": "A minor", "mood": "festive"},
        {"genre": "cumbia", "tempo": "", "key": "", "mood": "calm"},
        {"genre": "", "tempo": "", "key": "", "mood": ""},
    ]
    _labelled_table(folder, labels, ["mood", "key", "genre", "tempo"])  # any order of columns reads
    return folder


def _labels_by_file(clips) -> dict[str, dict]:
    return {Path(clip.source).name: clip.labels for clip in clips}


def test_table_labels_become_clip_labels(folder: Path, tmp_path: Path):
    (tmp_path / "corpus").mkdir()
    clips = ingest_folder(MICRO, tmp_path / "corpus", source_folder=folder, captions=folder / CAPTIONS_FILE, name="m")
    assert _labels_by_file(clips) == {
        "cumbia-0.wav": {
            "genre": "cumbia",
            "tempo": 96.0,
            "key": "A minor",
            "root": 9,
            "mode": "minor",
            "mood": "festive",
            "dataset": "m",
        },
        "cumbia-1.wav": {"genre": "cumbia", "mood": "calm", "dataset": "m"},  # empty cells: no label
        "cumbia-2.wav": {"dataset": "m"},
    }
    assert isinstance(clips[0].labels["tempo"], float)
    assert clips[0].caption == "a calm cumbia number 0"  # captions read as before

    # The main corpus folder (data.source with data.captions): the same labels, and no dataset label.
    (tmp_path / "main").mkdir()
    params = replace(MICRO, source=str(folder), captions=str(folder / CAPTIONS_FILE))
    main = _labels_by_file(ingest_folder(params, tmp_path / "main"))
    assert main["cumbia-0.wav"]["genre"] == "cumbia" and main["cumbia-0.wav"]["tempo"] == 96.0
    assert all("dataset" not in labels for labels in main.values())
    assert main["cumbia-2.wav"] == {}


def test_jsonl_labels_and_txt_captions(tmp_path: Path):
    folder = audio_folder(tmp_path / "mine", files=2, word="tango")
    table = tmp_path / "captions.jsonl"
    rows = [
        {"file": "tango-0.wav", "caption": "a tango", "genre": "tango", "tempo": 118, "key": "B-flat major"},
        {"file": "tango-1.wav", "caption": "another tango", "genre": "tango", "tempo": None, "mood": ""},
    ]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    files = sorted(folder.glob("*.wav"))
    labels = read_labels(folder, files, str(table))
    assert labels[files[0]] == {"genre": "tango", "tempo": 118.0, "key": "B-flat major", "root": 10, "mode": "major"}
    assert labels[files[1]] == {"genre": "tango"}  # null and empty: no label
    assert read_labels(folder, files, None) == {file: {} for file in files}  # .txt captions carry no labels


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("tempo", "fast", r"row 2 \(cumbia-1.wav\): tempo 'fast' is not a positive number of BPM"),
        ("tempo", "-90", r"row 2 \(cumbia-1.wav\): tempo '-90' is not a positive number of BPM"),
        ("key", "Am", r"row 2 \(cumbia-1.wav\): key 'Am' is not a key name such as 'A minor'"),
    ],
    ids=["word-tempo", "negative-tempo", "key"],
)
def test_a_label_that_cannot_be_read_is_named(folder: Path, tmp_path: Path, column: str, value: str, message: str):
    labels = [{column: ""}, {column: value}, {column: ""}]
    table = _labelled_table(folder, labels, [column])
    (tmp_path / "corpus").mkdir()
    with pytest.raises(ParamsError, match=rf"{CAPTIONS_FILE}: {message}"):
        ingest_folder(MICRO, tmp_path / "corpus", source_folder=folder, captions=table, name="m")


def test_data_add_copy_keeps_the_label_columns(folder: Path, tmp_path: Path):
    copy_source(folder, folder / CAPTIONS_FILE, tmp_path / "copy")
    with open(tmp_path / "copy" / CAPTIONS_FILE, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["file", "caption", *LABEL_COLUMNS]  # the canonical order, not the source's
    assert rows[0] == {
        "file": "cumbia-0.wav",
        "caption": "a calm cumbia number 0",
        "genre": "cumbia",
        "tempo": "96.0",
        "key": "A minor",
        "mood": "festive",
    }
    assert rows[2] == {"file": "cumbia-2.wav", "caption": "a calm cumbia number 2", **dict.fromkeys(LABEL_COLUMNS, "")}

    # Only the columns some file has a label in; none for a table without labels or for .txt captions.
    _labelled_table(folder, [{"mood": "calm"}, {"mood": ""}, {"mood": ""}], ["mood", "tempo"])
    copy_source(folder, folder / CAPTIONS_FILE, tmp_path / "moods")
    assert (tmp_path / "moods" / CAPTIONS_FILE).read_text().splitlines()[:2] == [
        "file,caption,mood",
        "cumbia-0.wav,a calm cumbia number 0,calm",
    ]
    plain = audio_folder(tmp_path / "plain", files=1, word="hum")
    copy_source(plain, None, tmp_path / "plain-copy")
    assert (tmp_path / "plain-copy" / CAPTIONS_FILE).read_text().splitlines()[0] == "file,caption"
