"""`musicops demo`'s new data: the genre the base model never heard is rendered and added as a data source once."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from components.corpus.genres import GENRES
from musicops.demo import add_new_genre, new_genre, source_name
from settings.data_sources import source_dir
from settings.params import DataParams, load_section
from tests.support.scratch_repo import scratch_repo


@pytest.mark.unit
def test_the_new_genre_is_the_first_one_the_corpus_leaves_out():
    assert new_genre(DataParams(genres=None)) is None  # every genre is in the base's corpus: none is new
    everything_but = sorted(set(GENRES) - {"reggae", "blues"})
    assert new_genre(DataParams(genres=everything_but)) == "blues"
    assert new_genre(replace(DataParams(genres=everything_but), source="my-audio")) is None  # the user's own corpus
    assert source_name("hip hop") == "hip-hop"


@pytest.mark.integration
def test_the_new_genre_is_added_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = scratch_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    kept = sorted(set(GENRES) - {"hip hop"})
    params["data"].update(clip_seconds=1.0, min_clip_seconds=0.5, sample_rate=16_000, genres=kept, sources=[])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    said: list[str] = []
    assert add_new_genre(Path("params.yaml"), said.append, clips=10) == "hip-hop"
    assert "hip hop, a genre the base model never heard" in said[0]
    assert load_section(Path("params.yaml"), "data").sources == ["hip-hop"]
    added = source_dir("hip-hop")
    assert len(list(added.glob("*.flac"))) == 10 and Path(f"{added}.dvc").is_file()  # DVC-tracked
    said.clear()
    assert add_new_genre(Path("params.yaml"), said.append, clips=10) == "hip-hop"  # a second run adds nothing
    assert said == [f"new data: hip hop is already a data source ({added})"]
    assert load_section(Path("params.yaml"), "data").sources == ["hip-hop"]
