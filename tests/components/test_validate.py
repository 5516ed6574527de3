"""The Great Expectations corpus validation: a clean synthetic corpus passes, and each kind of damage
is caught and named (with the offending clip) in the summary, the data docs and the CLI's exit code."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from components.corpus.manifest import Clip, read_manifest, split_counts, write_manifest
from components.validate import CLIPS_SUITE, ValidationSummary, app, validate_corpus
from settings.params import DataParams, ValidateParams

pytestmark = pytest.mark.integration

RATE = 32_000
DATA = DataParams(clip_seconds=1.0, min_clip_seconds=0.5, sample_rate=RATE)
THRESHOLDS = ValidateParams()
runner = CliRunner()


def tone(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A few summed sines under a fade in/out, at most 0.3 full scale: plainly audible, far from clipping."""
    t = np.arange(int(seconds * rate)) / rate
    freqs = 220.0 * 2 ** (np.random.default_rng(seed).integers(0, 12, size=3) / 12)
    audio = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 3
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (0.3 * audio * envelope).astype(np.float32)


def make_corpus(folder: Path, count: int = 6) -> Path:
    """`count` one-second clips, each its own source, split as `split_counts` says, labelled like rendered clips."""
    folder.mkdir(parents=True)
    sizes = split_counts(count, DATA.splits)
    splits = [split for split, size in sizes.items() for _ in range(size)]
    clips = []
    for index, split in enumerate(splits):
        path = f"clip-{index:04d}.flac"
        sf.write(folder / path, tone(seed=index), RATE)
        labels = {"genre": "jazz", "key": "B-flat major", "root": 10, "mode": "major", "tempo": 92}
        caption = f"a laid-back jazz piece in B-flat major at 92 BPM, take {index}"
        clips.append(Clip(f"clip-{index:04d}", path, 1.0, RATE, caption, split, f"src-{index}", labels))
    write_manifest(folder, clips)
    return folder


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("validate") / "corpus")


@pytest.fixture
def corpus(clean_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the clean corpus, free to damage."""
    return Path(shutil.copytree(clean_corpus, tmp_path / "corpus"))


def edit_clip(folder: Path, index: int, **changes) -> None:
    """Rewrite manifest entry `index` with `changes`."""
    clips = read_manifest(folder)
    clips[index] = replace(clips[index], **changes)
    write_manifest(folder, clips)


def rewrite_audio(folder: Path, index: int, audio: np.ndarray, rate: int = RATE) -> None:
    sf.write(folder / f"clip-{index:04d}.flac", audio, rate)


def write_nan_wav(folder: Path, index: int) -> None:
    # FLAC stores integers; only a float WAV can carry a NaN.
    audio = tone(seed=index)
    audio[100] = np.nan
    sf.write(folder / f"clip-{index:04d}.wav", audio, RATE, subtype="FLOAT")
    edit_clip(folder, index, path=f"clip-{index:04d}.wav")


def index_of_split(folder: Path, split: str) -> int:
    return next(i for i, clip in enumerate(read_manifest(folder)) if clip.split == split)


def share_source_across_splits(folder: Path) -> None:
    test = read_manifest(folder)[index_of_split(folder, "test")]
    edit_clip(folder, 0, source=test.source)  # clip 0 is in train


# (what is done to the corpus, the column of the check that must fail, the expectation type, an offending id)
CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    "missing file": (
        lambda f: (f / "clip-0001.flac").unlink(),
        "exists",
        "expect_column_values_to_be_in_set",
        "clip-0001",
    ),
    "does not decode": (
        lambda f: (f / "clip-0001.flac").write_bytes(b"not audio at all" * 64),
        "decodes",
        "expect_column_values_to_be_in_set",
        "clip-0001",
    ),
    "wrong sample rate": (
        lambda f: rewrite_audio(f, 2, tone(rate=16_000), rate=16_000),
        "sample_rate",
        "expect_column_values_to_be_in_set",
        "clip-0002",
    ),
    "stereo": (
        lambda f: rewrite_audio(f, 3, np.stack([tone(), tone(seed=9)], axis=1)),
        "channels",
        "expect_column_values_to_be_in_set",
        "clip-0003",
    ),
    "too short": (
        lambda f: rewrite_audio(f, 1, tone(seconds=0.3)),
        "duration",
        "expect_column_values_to_be_between",
        "clip-0001",
    ),
    "silent": (
        lambda f: rewrite_audio(f, 2, np.zeros(RATE, dtype=np.float32)),
        "rms",
        "expect_column_values_to_be_between",
        "clip-0002",
    ),
    "clipped": (
        lambda f: rewrite_audio(f, 0, np.clip(tone() * 20, -1, 1)),
        "clipped_share",
        "expect_column_values_to_be_between",
        "clip-0000",
    ),
    "NaN in audio": (
        lambda f: write_nan_wav(f, 4),
        "has_nan",
        "expect_column_values_to_be_in_set",
        "clip-0004",
    ),
    "empty caption": (
        lambda f: edit_clip(f, 1, caption="  "),
        "caption",
        "expect_column_values_to_match_regex",
        "clip-0001",
    ),
    "caption too long": (
        lambda f: edit_clip(f, 2, caption="jazz " * (THRESHOLDS.caption_max_chars // 5 + 1)),
        "caption",
        "expect_column_value_lengths_to_be_between",
        "clip-0002",
    ),
    "duplicate id": (
        lambda f: edit_clip(f, 3, id="clip-0000"),
        "id",
        "expect_column_values_to_be_unique",
        "clip-0000",
    ),
    "unknown genre": (
        lambda f: edit_clip(f, 1, labels={"genre": "yacht-polka", "key": "C major", "mode": "major", "tempo": 100}),
        "genre",
        "expect_column_values_to_be_in_set",
        "clip-0001",
    ),
    "bad key label": (
        lambda f: edit_clip(f, 2, labels={"genre": "jazz", "key": "H major", "mode": "major", "tempo": 100}),
        "key",
        "expect_column_values_to_be_in_set",
        "clip-0002",
    ),
    "split sizes off": (
        lambda f: edit_clip(f, index_of_split(f, "test"), split="train"),
        "sources, expected",
        "expect_column_pair_values_to_be_equal",
        "test",
    ),
    "source in two splits": (
        share_source_across_splits,
        "source_splits",
        "expect_column_values_to_be_in_set",
        "clip-0000",
    ),
}


def run(folder: Path, out: Path) -> ValidationSummary:
    return validate_corpus(folder, out, DATA, THRESHOLDS)


def test_clean_corpus_passes_and_writes_the_report(clean_corpus: Path, tmp_path: Path):
    out = tmp_path / "validation"
    summary = run(clean_corpus, out)
    assert summary.success, [failure.line() for failure in summary.failures]
    assert summary.clips == 6 and summary.checks > 15 and summary.failures == []
    index = out / "data_docs" / "index.html"
    assert summary.data_docs == index and index.is_file()
    assert CLIPS_SUITE in index.read_text()
    recorded = json.loads((out / "summary.json").read_text())
    assert recorded["success"] is True and recorded["clips"] == 6 and recorded["failures"] == []
    stats = (out / "audio_stats.csv").read_text().splitlines()
    assert len(stats) == 1 + 6 and "rms" in stats[0] and "clipped_share" in stats[0]


@pytest.mark.parametrize("unlabelled", [(0, 4), range(6)], ids=["some", "all"])
def test_ingested_clips_without_labels_pass(unlabelled, corpus: Path, tmp_path: Path):
    for index in unlabelled:
        edit_clip(corpus, index, labels={})
    summary = run(corpus, tmp_path / "validation")
    assert summary.success, [failure.line() for failure in summary.failures]


def test_a_check_gx_cannot_evaluate_fails_with_its_reason(corpus: Path, tmp_path: Path):
    edit_clip(corpus, 1, labels={"genre": "jazz", "tempo": "fast"})
    summary = run(corpus, tmp_path / "validation")
    [failure] = summary.failures
    assert failure.column == "tempo" and failure.error
    assert failure.line().startswith(f"✗ {failure.check}: could not be checked: ")


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_each_kind_of_damage_is_caught_and_named(damage: str, corpus: Path, tmp_path: Path):
    corrupt, column, expectation, offender = CORRUPTIONS[damage]
    corrupt(corpus)
    out = tmp_path / "validation"
    summary = run(corpus, out)
    assert not summary.success
    named = [f for f in summary.failures if f.column == column and f.expectation == expectation]
    assert named, f"{damage}: expected {expectation} on {column}, got {[f.line() for f in summary.failures]}"
    assert offender in named[0].examples and offender in named[0].line()
    recorded = json.loads((out / "summary.json").read_text())
    assert recorded["success"] is False
    assert any(f["column"] == column and offender in f["examples"] for f in recorded["failures"])
    assert (out / "data_docs" / "index.html").is_file()  # written for a failed run too


def write_params(folder: Path) -> Path:
    path = folder / "params.yaml"
    data = {"clip_seconds": DATA.clip_seconds, "min_clip_seconds": DATA.min_clip_seconds, "sample_rate": RATE}
    path.write_text(yaml.safe_dump({"data": data, "validate": {"rms_floor": THRESHOLDS.rms_floor}}))
    return path


def test_cli_exit_codes_and_report(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as dvc.yaml gives them
    write_params(tmp_path)
    out = Path("validation")
    args = ["--params", "params.yaml", "--corpus", "corpus", "--out", str(out)]
    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.output
    assert "passed" in clean.output and str(out / "data_docs" / "index.html") in clean.output
    assert (out / "data_docs" / "index.html").is_file()

    rewrite_audio(corpus, 3, np.zeros(RATE, dtype=np.float32))
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert f"✗ not silent (rms >= {THRESHOLDS.rms_floor:g}): 1 clip: clip-0003" in failed.output
    assert json.loads((out / "summary.json").read_text())["success"] is False


@pytest.mark.parametrize(
    ("problem", "message"),
    [("no corpus", "does not exist"), ("no manifest", "manifest.jsonl"), ("bad params", "unknown key")],
)
def test_cli_names_bad_input(problem: str, message: str, corpus: Path, tmp_path: Path):
    params = write_params(tmp_path)
    if problem == "no corpus":
        corpus = tmp_path / "nowhere"
    elif problem == "no manifest":
        (corpus / "manifest.jsonl").unlink()
    else:
        params.write_text("validate:\n  rms_flor: 0.1\n")
    result = runner.invoke(app, ["--params", str(params), "--corpus", str(corpus), "--out", str(tmp_path / "v")])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert not (tmp_path / "v").exists()
