"""The prepare stage: a deterministic rendered corpus whose labels are true, ingest, and resume."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from components import prepare as prepare_module
from components.corpus import rendered
from components.corpus.compose import compose
from components.corpus.genres import GENRES
from components.corpus.manifest import read_manifest
from components.corpus.render import render
from components.prepare import prepare
from model.music_features import estimate_key, estimate_tempo, key_name, key_score, tempo_matches
from settings.params import DataParams, ParamsError

pytestmark = pytest.mark.integration

SMALL = DataParams(count=12, clip_seconds=2.0, seed=7)


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(
        b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    prepare(SMALL, tmp_path / "a", show_progress=False)
    prepare(SMALL, tmp_path / "b", show_progress=False)
    prepare(DataParams(count=12, clip_seconds=2.0, seed=8), tmp_path / "c", show_progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_rendering_does_not_depend_on_what_was_rendered_before():
    first = compose("jazz", 1, 1.0)
    alone = render(first.midi, 32_000, 1.0)
    render(compose("rock", 2, 1.0).midi, 32_000, 1.0)
    assert np.array_equal(render(first.midi, 32_000, 1.0), alone)


def test_manifest_fields_splits_and_captions(tmp_path):
    clips = prepare(DataParams(count=30, clip_seconds=1.0), tmp_path / "corpus", show_progress=False)
    assert [c.id for c in read_manifest(tmp_path / "corpus")] == [c.id for c in clips]
    assert Counter(c.split for c in clips) == {"train": 24, "valid": 3, "test": 3}
    assert len({c.labels["genre"] for c in clips if c.split == "test"}) == 3  # stratified by genre
    assert Counter(c.labels["genre"] for c in clips) == {genre: 3 for genre in GENRES}
    for clip in clips:
        info = sf.info(str(tmp_path / "corpus" / clip.path))
        assert (info.samplerate, info.channels, info.frames) == (32_000, 1, 32_000)
        assert clip.labels["key"] in clip.caption and str(clip.labels["tempo"]) in clip.caption
        assert clip.labels["genre"] in clip.caption.lower()
        assert (tmp_path / "corpus" / "midi" / f"{clip.id}.mid").is_file()
    assert len({c.caption for c in clips}) == len(clips)


def test_labels_are_true_to_a_standard_estimator():
    """Tempo: librosa's beat tracker within 4% (or at double/half tempo) on every genre with drums.
    Key: the chroma key profile (model.music_features) gives a MIREX weighted score of at least 0.8
    over one clip per genre, and the exact key for at least 7 of the 10."""
    scores, exact = [], 0
    for index, genre in enumerate(sorted(GENRES)):
        piece = compose(genre, 1000 + index, 8.0)
        audio = render(piece.midi, 22_050, 8.0)
        labels = piece.labels
        if labels["drums"]:
            tempo = estimate_tempo(audio, 22_050)
            assert tempo_matches(tempo, labels["tempo"]), (genre, labels["tempo"], tempo)
        estimated = estimate_key(audio, 22_050)
        scores.append(key_score(estimated, (labels["root"], labels["mode"])))
        exact += key_name(*estimated) == labels["key"]
    assert np.mean(scores) >= 0.8 and exact >= 7, (scores, exact)


def test_a_killed_run_resumes_and_ends_with_the_same_corpus(tmp_path, monkeypatch):
    prepare(SMALL, tmp_path / "whole", show_progress=False)
    calls = {"n": 0}
    real_render = rendered.render

    def dies_after_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # as a killed process stops mid-way
        return real_render(*args, **kwargs)

    monkeypatch.setattr(rendered, "render", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        prepare(SMALL, tmp_path / "resumed", show_progress=False)
    assert not (tmp_path / "resumed").exists()  # nothing half-written where the corpus belongs
    monkeypatch.setattr(rendered, "render", real_render)
    rendered_again = {"n": 0}
    monkeypatch.setattr(
        rendered,
        "render",
        lambda *a, **k: rendered_again.__setitem__("n", rendered_again["n"] + 1) or real_render(*a, **k),
    )
    prepare(SMALL, tmp_path / "resumed", show_progress=False)
    assert rendered_again["n"] == SMALL.count - 5  # only what was missing
    assert _digest(tmp_path / "resumed") == _digest(tmp_path / "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed", "whole"]


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 330 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def test_ingest_resamples_cuts_and_keeps_files_in_one_split(tmp_path):
    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    sf.write(str(music / "a.wav"), _tone(2.5, 44_100, channels=2), 44_100)
    sf.write(str(music / "sub" / "b.flac"), _tone(1.2, 16_000), 16_000)
    sf.write(str(music / "c.wav"), _tone(3.0, 32_000), 32_000)
    for name, caption in (("a", "calm piano"), ("sub/b", "fast drums"), ("c", "a choir")):
        (music / f"{name}.txt").write_text(caption + "\n")
    params = DataParams(source=str(music), clip_seconds=1.0, min_clip_seconds=0.5)
    clips = prepare(params, tmp_path / "corpus", show_progress=False)
    by_source = {}
    for clip in clips:
        by_source.setdefault(clip.source, []).append(clip)
        info = sf.info(str(tmp_path / "corpus" / clip.path))
        assert (info.samplerate, info.channels) == (32_000, 1)
        assert info.frames == round(clip.duration * 32_000)
    assert [c.duration for c in by_source["a.wav"]] == [1.0, 1.0, 0.5]
    assert [c.duration for c in by_source["sub/b.flac"]] == [1.0]  # the 0.2 s tail is dropped
    assert {c.caption for c in by_source["sub/b.flac"]} == {"fast drums"}
    assert all(len({c.split for c in group}) == 1 for group in by_source.values())
    assert Counter(group[0].split for group in by_source.values()) == {"train": 1, "valid": 1, "test": 1}


def test_ingest_captions_from_a_table_and_missing_captions_named(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for name in ("x", "y", "z"):
        sf.write(str(music / f"{name}.wav"), _tone(1.0, 32_000), 32_000)
    table = tmp_path / "captions.jsonl"
    table.write_text("\n".join(json.dumps({"file": f"{n}.wav", "caption": f"song {n}"}) for n in ("x", "y", "z")))
    params = DataParams(source=str(music), captions=str(table), clip_seconds=1.0)
    assert sorted(c.caption for c in prepare(params, tmp_path / "out", show_progress=False)) == [
        "song x",
        "song y",
        "song z",
    ]
    with pytest.raises(ParamsError, match=r"no caption for 3 audio file\(s\): x.wav, y.wav, z.wav"):
        prepare(DataParams(source=str(music), clip_seconds=1.0), tmp_path / "out2", show_progress=False)


def test_cli_reports_and_names_bad_params(tmp_path):
    runner = CliRunner()
    good = tmp_path / "params.yaml"
    good.write_text("data:\n  count: 10\n  clip_seconds: 1.0\n")
    result = runner.invoke(prepare_module.app, ["--params", str(good), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "prepared 10 clips" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  count: 10\n  colour: blue\n")
    result = runner.invoke(prepare_module.app, ["--params", str(bad), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "unknown key(s) in params section 'data': colour" in result.output
    assert not (tmp_path / "d").exists()
