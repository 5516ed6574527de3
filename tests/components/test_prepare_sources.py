"""The prepare stage reads the user's data sources (data.sources) beside the main corpus: prefixed ids,
dataset labels, whole files per split within each source, sources.json, a resume key that follows the
sources' contents, and a clear error for a missing source."""

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf

from components import prepare as prepare_module
from components.corpus.manifest import read_manifest, read_sources, split_counts
from components.prepare import _resume_key, prepare
from components.validate import validate_corpus
from settings.data_sources import CAPTIONS_FILE, source_digests
from settings.params import DataParams, ParamsError, ValidateParams
from tests.support.audio_folder import audio_folder, tone

pytestmark = pytest.mark.integration

# Six rendered clips, and two sources whose split counts (5 files: 3/1/1, 3 files: 1/1/1) do not add up to
# what splitting all 14 files at once would give (12/1/1): each part is split on its own.
MICRO = DataParams(count=6, clip_seconds=1.0, min_clip_seconds=0.5, sample_rate=16_000, seed=2)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    root = tmp_path / "sources"
    audio_folder(root / "strings", files=5, table=CAPTIONS_FILE, word="violin")
    audio_folder(root / "voices", files=3, seconds=1.5, rate=22_050, word="choir")  # .txt captions
    return root


def test_sources_are_ingested_beside_the_rendered_corpus(sources: Path, tmp_path: Path):
    params = replace(MICRO, sources=["strings", "voices"])
    clips = prepare(params, tmp_path / "corpus", show_progress=False, sources_root=sources)
    assert [c.id for c in read_manifest(tmp_path / "corpus")] == [c.id for c in clips]
    assert len({c.id for c in clips}) == len(clips) == 6 + 5 + 3 * 2  # the voices' 1.5 s files give 2 clips each
    assert len({c.path for c in clips}) == len(clips)

    rendered = clips[:6]
    assert all("genre" in c.labels and "dataset" not in c.labels for c in rendered)  # main labels untouched
    by_dataset = Counter(c.labels.get("dataset") for c in clips)
    assert by_dataset == {None: 6, "strings": 5, "voices": 6}
    for name, files in (("strings", 5), ("voices", 3)):
        ingested = [c for c in clips if c.labels.get("dataset") == name]
        assert all(c.id.startswith(f"{name}-") and c.source.startswith(f"{name}/") for c in ingested)
        split_of_file = {}
        for clip in ingested:
            assert split_of_file.setdefault(clip.source, clip.split) == clip.split  # whole files per split
        assert Counter(split_of_file.values()) == {k: v for k, v in split_counts(files, MICRO.splits).items() if v}
    assert {c.caption for c in clips if c.labels.get("dataset") == "strings"} == {
        f"a calm violin number {n}" for n in range(5)
    }
    assert {c.caption for c in clips if c.labels.get("dataset") == "voices"} == {
        f"a calm choir number {n}" for n in range(3)
    }
    for clip in clips[6:]:
        info = sf.info(str(tmp_path / "corpus" / clip.path))
        assert (info.samplerate, info.channels) == (16_000, 1)

    assert read_sources(tmp_path / "corpus") == source_digests(["strings", "voices"], sources)
    summary = validate_corpus(tmp_path / "corpus", tmp_path / "validation", params, ValidateParams())
    assert summary.success, [failure.line() for failure in summary.failures]


def test_no_sources_records_none(tmp_path: Path):
    prepare(MICRO, tmp_path / "corpus", show_progress=False, sources_root=tmp_path / "nowhere")
    assert (tmp_path / "corpus" / "sources.json").is_file()
    assert read_sources(tmp_path / "corpus") == {}


def test_resume_key_follows_the_sources_contents(sources: Path, tmp_path: Path, monkeypatch):
    params = replace(MICRO, sources=["strings"])

    def key() -> str:
        return _resume_key(params, source_digests(params.sources, sources))

    before = key()
    assert key() == before
    (sources / "strings" / CAPTIONS_FILE).write_text(
        (sources / "strings" / CAPTIONS_FILE).read_text().replace("number 0", "number zero")
    )
    assert key() != before

    # A run killed before a file changed leaves its clips in a staging folder; the rerun must not resume there.
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(params, tmp_path / "corpus", show_progress=False, sources_root=sources)
    monkeypatch.undo()
    assert list(tmp_path.glob(".corpus.partial-*"))
    sf.write(str(sources / "strings" / "violin-0.wav"), tone(1.0, 32_000, 880.0), 32_000)  # same name, new sound
    prepare(params, tmp_path / "corpus", show_progress=False, sources_root=sources)
    prepare(params, tmp_path / "fresh", show_progress=False, sources_root=sources)
    for clip in read_manifest(tmp_path / "fresh"):
        assert (tmp_path / "corpus" / clip.path).read_bytes() == (tmp_path / "fresh" / clip.path).read_bytes()


def test_a_missing_source_is_named_with_the_command_that_adds_it(sources: Path, tmp_path: Path):
    params = replace(MICRO, sources=["strings", "drums"])
    with pytest.raises(ParamsError, match=r"'drums'.*does not exist.*musicops data add FOLDER --name drums"):
        prepare(params, tmp_path / "corpus", show_progress=False, sources_root=sources)
    assert not (tmp_path / "corpus").exists()
    with pytest.raises(ParamsError, match="lists strings more than once"):
        prepare(replace(MICRO, sources=["strings"] * 2), tmp_path / "c", show_progress=False, sources_root=sources)


def test_a_source_without_captions_is_named(sources: Path, tmp_path: Path):
    (sources / "voices" / "choir-1.txt").unlink()
    with pytest.raises(ParamsError, match=r"no caption for 1 audio file\(s\): choir-1.wav"):
        prepare(replace(MICRO, sources=["voices"]), tmp_path / "corpus", show_progress=False, sources_root=sources)
