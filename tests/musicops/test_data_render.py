"""`musicops data render`: one genre of the offline corpus as a folder of new data, with its clips' labels, which
`musicops data add` takes as it is, labels kept; bad genres and folders are named and change nothing."""

import csv
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from components.corpus.ingest import LABEL_COLUMNS, ingest_folder
from model.music_features import parse_key
from musicops.cli import app
from settings.data_sources import CAPTIONS_FILE
from settings.params import load_section
from tests.support.scratch_repo import scratch_repo

pytestmark = pytest.mark.integration
runner = CliRunner()
RATE = 16_000


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch git + DVC repository whose params.yaml asks for 1 s clips at 16 kHz (micro, and not the defaults,
    so the test shows `data render` reads them)."""
    repo = scratch_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(clip_seconds=1.0, min_clip_seconds=0.5, sample_rate=RATE)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    return repo


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / CAPTIONS_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rendered_clips_are_taken_by_data_add(repo: Path):
    result = runner.invoke(app, ["data", "render", "new", "--genre", "hip hop", "--count", "4"])
    assert result.exit_code == 0, result.output
    assert "rendered 4 hip hop clips" in result.output and "musicops data add new" in result.output
    folder = repo / "new"
    files = [f"hip-hop-{index:05d}.flac" for index in range(4)]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*files, CAPTIONS_FILE])
    rows = _rows(folder)
    assert [row["file"] for row in rows] == files
    assert all("hip hop" in row["caption"].lower() for row in rows)
    assert len({row["caption"] for row in rows}) == 4
    assert list(rows[0]) == ["file", "caption", *LABEL_COLUMNS]
    for row in rows:  # the labels the caption was written from
        assert row["genre"] == "hip hop" and row["key"] in row["caption"] and row["mood"] in row["caption"].lower()
        assert f"{round(float(row['tempo']))} BPM" in row["caption"].upper()
        parse_key(row["key"])
    for file in files:
        info = sf.info(str(folder / file))
        assert (info.samplerate, info.channels, info.frames) == (RATE, 1, RATE)  # params.yaml's, not the defaults

    added = runner.invoke(app, ["data", "add", "new", "--name", "hiphop"])
    assert added.exit_code == 0, added.output
    assert "4 clips from 4 files passed all" in added.output
    source = repo / "data" / "sources" / "hiphop"
    assert sorted(p.name for p in source.iterdir()) == sorted([*files, CAPTIONS_FILE])
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["sources"] == ["hiphop"]

    # The added source keeps the labels, and its clips carry them: evaluation can measure adherence on them.
    copied = _rows(source)
    assert [(row["genre"], float(row["tempo"]), row["key"], row["mood"]) for row in copied] == [
        (row["genre"], float(row["tempo"]), row["key"], row["mood"]) for row in rows
    ]
    (repo / "corpus").mkdir()
    clips = ingest_folder(
        load_section(repo / "params.yaml", "data"),
        repo / "corpus",
        source_folder=source,
        captions=source / CAPTIONS_FILE,
        name="hiphop",
    )
    assert len(clips) == 4
    for clip in clips:
        row = next(row for row in rows if row["file"] == Path(clip.source).name)
        assert clip.labels["genre"] == "hip hop" and clip.labels["dataset"] == "hiphop"
        assert clip.labels["tempo"] == float(row["tempo"]) and clip.labels["key"] == row["key"]


def test_same_seed_same_bytes_another_seed_other_clips(repo: Path):
    for folder, seed in (("a", "0"), ("b", "0"), ("c", "5")):
        result = runner.invoke(app, ["data", "render", folder, "--genre", "jazz", "--count", "2", "--seed", seed])
        assert result.exit_code == 0, result.output
    clip = "jazz-00001.flac"
    assert (repo / "a" / clip).read_bytes() == (repo / "b" / clip).read_bytes()
    assert (repo / "a" / clip).read_bytes() != (repo / "c" / clip).read_bytes()
    assert _rows(repo / "a") == _rows(repo / "b") != _rows(repo / "c")


def test_an_unknown_genre_or_a_used_folder_is_refused(repo: Path):
    unknown = runner.invoke(app, ["data", "render", "new", "--genre", "polka"])
    assert unknown.exit_code == 2
    assert "unknown genre(s) 'polka'; known genres: ambient, blues" in unknown.output
    assert not (repo / "new").exists()

    (repo / "used").mkdir()
    (repo / "used" / "mine.wav").write_bytes(b"keep me")
    used = runner.invoke(app, ["data", "render", "used", "--genre", "jazz", "--count", "1"])
    assert used.exit_code == 2 and "already exists and is not an empty folder" in used.output
    assert [p.name for p in (repo / "used").iterdir()] == ["mine.wav"]

    (repo / "empty").mkdir()
    empty = runner.invoke(app, ["data", "render", "empty", "--genre", "jazz", "--count", "1"])
    assert empty.exit_code == 0, empty.output
    assert sorted(p.name for p in (repo / "empty").iterdir()) == [CAPTIONS_FILE, "jazz-00000.flac"]
