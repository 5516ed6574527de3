"""settings.data_sources: a source's digest follows its contents, and the sources a model has not seen are the
new ones and the changed ones."""

from __future__ import annotations

import pytest

from settings.data_sources import source_digest, source_digests, source_dir, unseen_sources

pytestmark = pytest.mark.unit


def test_a_sources_digest_changes_with_its_files_and_nothing_else(tmp_path):
    folder = tmp_path / "cumbia"
    (folder / "takes").mkdir(parents=True)
    (folder / "takes" / "a.wav").write_bytes(b"RIFF one")
    (folder / "captions.csv").write_text("file,caption\ntakes/a.wav,cumbia with accordion\n")
    first = source_digest(folder)
    (folder / ".DS_Store").write_bytes(b"finder noise")  # hidden files are not data
    assert source_digest(folder) == first
    (folder / "takes" / "a.wav").write_bytes(b"RIFF two")
    changed = source_digest(folder)
    assert changed != first
    (folder / "takes" / "a.wav").rename(folder / "takes" / "b.wav")
    assert source_digest(folder) not in (first, changed)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        source_digest(tmp_path / "missing")


def test_unseen_sources_are_the_new_and_the_changed_ones(tmp_path):
    for name in ("cumbia", "polka"):
        source_dir(name, tmp_path).mkdir()
        (source_dir(name, tmp_path) / "a.txt").write_text(name)
    current = source_digests(["cumbia", "polka"], tmp_path)
    assert unseen_sources(current, current) == []
    assert unseen_sources(current, {}) == ["cumbia", "polka"]
    assert unseen_sources(current, {"cumbia": current["cumbia"], "polka": "an older digest"}) == ["polka"]
