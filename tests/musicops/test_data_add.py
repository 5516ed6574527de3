"""`musicops data add` end to end in a temporary git + DVC repository: a folder that fails validation changes
nothing; one that passes becomes data/sources/<name>, DVC-tracked, and listed in params.yaml with its comments
kept; bad folders and names are named."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from musicops.cli import app
from settings.data_sources import CAPTIONS_FILE
from tests.support.audio_folder import audio_folder
from tests.support.scratch_repo import scratch_repo

pytestmark = pytest.mark.integration
runner = CliRunner()
SECONDS = 5.0  # params.yaml's data.min_clip_seconds: each file gives one clip


def _state(repo: Path) -> dict[str, bytes]:
    """Every file of the repository outside .git and .dvc/tmp, with its bytes."""
    return {
        str(path.relative_to(repo)): path.read_bytes()
        for path in sorted(repo.rglob("*"))
        if path.is_file()
        and path.relative_to(repo).parts[0] not in (".git", "music", "bad")
        and "tmp" not in path.relative_to(repo).parts
    }


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = scratch_repo(tmp_path)
    monkeypatch.chdir(repo)
    return repo


def test_a_folder_that_fails_validation_changes_nothing(repo: Path):
    bad = audio_folder(repo / "bad", files=3, seconds=SECONDS, word="hum")
    sf.write(str(bad / "hum-1.wav"), np.zeros(int(SECONDS * 32_000), dtype=np.float32), 32_000)  # silent
    (bad / "hum-2.txt").write_text("ok\n")  # a caption under caption_min_chars
    before = _state(repo)
    result = runner.invoke(app, ["data", "add", "bad"])
    assert result.exit_code == 1, result.output
    assert "✗ not silent (rms >= 0.003): 1 clip: file00001-000" in result.output
    assert "✗ caption is 10 to 400 characters: 1 clip: file00002-000" in result.output
    assert "nothing was added" in result.output
    assert _state(repo) == before
    assert not (repo / "data").exists()


def test_a_folder_that_passes_is_copied_tracked_and_listed(repo: Path):
    audio_folder(repo / "music", files=3, seconds=SECONDS, rate=44_100, table=CAPTIONS_FILE, word="cello")
    original = (repo / "params.yaml").read_text()
    result = runner.invoke(app, ["data", "add", "music", "--name", "cellos"])
    assert result.exit_code == 0, result.output
    assert "passed all" in result.output and "tracked by DVC: data/sources/cellos.dvc" in result.output
    assert "dvc repro" in result.output

    source = repo / "data" / "sources" / "cellos"
    assert sorted(p.name for p in source.iterdir()) == [CAPTIONS_FILE, "cello-0.wav", "cello-1.wav", "cello-2.wav"]
    assert (source / "cello-1.wav").read_bytes() == (repo / "music" / "cello-1.wav").read_bytes()
    assert "cello-1.wav,a calm cello number 1" in (source / CAPTIONS_FILE).read_text()
    tracked = yaml.safe_load((repo / "data" / "sources" / "cellos.dvc").read_text())
    assert tracked["outs"][0]["path"] == "cellos" and tracked["outs"][0]["md5"].endswith(".dir")
    assert "/cellos" in (repo / "data" / "sources" / ".gitignore").read_text().split()
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/sources/cellos/cello-0.wav"], cwd=repo)
    assert ignored.returncode == 0  # git keeps the pointer, DVC the audio

    params = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params)["data"]["sources"] == ["cellos"]
    changed = [(a, b) for a, b in zip(original.splitlines(), params.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("  sources: [cellos]")  # one line, comments kept
    assert "# your data sources beside the corpus" in changed[0][1]

    again = runner.invoke(app, ["data", "add", "music", "--name", "cellos"])
    assert again.exit_code == 2 and "already exists" in again.output and "--replace" in again.output
    audio_folder(repo / "music", files=4, seconds=SECONDS, table=CAPTIONS_FILE, word="cello")
    replaced = runner.invoke(app, ["data", "add", "music", "--name", "cellos", "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert (source / "cello-3.wav").is_file()
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["sources"] == ["cellos"]  # listed once


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda folder: None, "is not a folder"),
        (lambda folder: folder.mkdir() or (folder / "notes.txt").write_text("x"), "no audio files"),
        (
            lambda folder: audio_folder(folder, files=2, seconds=SECONDS).joinpath("song-1.txt").unlink(),
            r"no caption for 1 audio file(s): song-1.wav",
        ),
    ],
    ids=["missing", "no-audio", "no-caption"],
)
def test_bad_folders_are_named_and_change_nothing(repo: Path, make, message: str):
    make(repo / "music")
    before = _state(repo)
    result = runner.invoke(app, ["data", "add", "music"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert _state(repo) == before


def test_a_bad_name_is_refused(repo: Path):
    audio_folder(repo / "music", files=1, seconds=SECONDS)
    result = runner.invoke(app, ["data", "add", "music", "--name", "../escape"])
    assert result.exit_code == 2 and "must be letters, digits" in result.output


def test_outside_a_dvc_repository_it_says_the_source_is_not_tracked(tmp_path: Path, monkeypatch):
    repo = scratch_repo(tmp_path, dvc=False)
    monkeypatch.chdir(repo)
    audio_folder(repo / "music", files=3, seconds=SECONDS)
    result = runner.invoke(app, ["data", "add", "music"])
    assert result.exit_code == 0, result.output
    assert "not tracked by DVC" in result.output
    assert (repo / "data" / "sources" / "music" / CAPTIONS_FILE).is_file()
    assert not (repo / "data" / "sources" / "music.dvc").exists()
