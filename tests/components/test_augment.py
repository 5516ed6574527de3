"""The augment stage on a small corpus of tonal test clips: an arpeggio of the tonic triad over a drone, in
a known key, with a click on every beat at a known tempo, so the key and beat can be measured back."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from components import augment
from components.corpus.captions import merge_captions, write_caption
from components.corpus.manifest import MANIFEST_FILE, Clip, read_manifest, write_manifest
from model.music_features import estimate_key, key_name
from settings.params import AugmentParams, DataParams, ParamsError

pytestmark = pytest.mark.integration

SR = 32_000
SECONDS = 2.0
DATA = DataParams(sample_rate=SR)
NO_TRANSFORMS = dict.fromkeys(augment.TRANSFORMS, 0.0)
# (root, mode, tempo) of the labelled train clips
TRAIN_KEYS = ((0, "major", 120), (7, "major", 100), (2, "minor", 120), (9, "minor", 96))
INGESTED_CAPTION = "A brass band recorded in the street at dusk, with crowd noise."


def _note(frequency: float, length: int, decay: float) -> np.ndarray:
    t = np.arange(length) / SR
    envelope = np.exp(-t / decay) * np.minimum(1.0, t / 0.005)
    return sum(np.sin(2 * np.pi * k * frequency * t) / k for k in range(1, 5)) * envelope


def tonal_clip(root: int, mode: str, tempo: float) -> np.ndarray:
    """Tonic triad arpeggio (a note per beat) over a tonic drone, plus a 3 kHz click on every beat."""
    n, beat = int(SR * SECONDS), 60.0 / tempo
    third = 4 if mode == "major" else 3
    audio = 0.3 * _note(130.81 * 2 ** (root / 12), n, 1e9)
    clicks = np.zeros(n)
    for i, start in enumerate(int(s * SR) for s in np.arange(0.0, SECONDS, beat)):
        step = (0, third, 7, 12)[i % 4]
        audio[start:] += _note(261.63 * 2 ** ((root + step) / 12), n - start, beat)
        clicks[start:] += np.sin(2 * np.pi * 3000 * np.arange(n - start) / SR) * np.exp(-np.arange(n - start) / 100)
    return (0.6 * audio / np.abs(audio).max() + 0.3 * clicks).astype(np.float32)


def _rendered_labels(root: int, mode: str, tempo: int) -> dict:
    return {
        "genre": "jazz",
        "key": key_name(root, mode),
        "root": root,
        "mode": mode,
        "tempo": tempo,
        "mood": "laid-back",
        "instruments": ["saxophone", "piano"],
        "drums": "brushed drums",
        "chords": ["I", "vi", "ii", "V"],
    }


def _add(folder: Path, clips: list[Clip], clip_id: str, split: str, audio: np.ndarray, labels: dict, caption: str):
    sf.write(folder / "audio" / f"{clip_id}.flac", audio, SR)
    clips.append(Clip(clip_id, f"audio/{clip_id}.flac", SECONDS, SR, caption, split, f"src-{clip_id}", labels))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "audio").mkdir()
    clips: list[Clip] = []
    rng = np.random.default_rng(0)
    keys = (*TRAIN_KEYS, (5, "major", 110), (4, "minor", 90))
    for number, (root, mode, tempo) in enumerate(keys):
        labels = _rendered_labels(root, mode, tempo)
        split = "train" if number < len(TRAIN_KEYS) else ("valid", "test")[number - len(TRAIN_KEYS)]
        _add(folder, clips, f"clip{number}", split, tonal_clip(root, mode, tempo), labels, write_caption(labels, rng))
    _add(folder, clips, "street", "train", tonal_clip(3, "major", 120), {}, INGESTED_CAPTION)
    write_manifest(folder, clips)
    return folder


@pytest.fixture(scope="module")
def originals(corpus: Path) -> dict[str, Clip]:
    return {clip.id: clip for clip in read_manifest(corpus)}


def _params(**changes) -> AugmentParams:
    changes.setdefault("polymix", 0.0)
    return replace(AugmentParams(), **changes)


def _only(name: str, **changes) -> AugmentParams:
    return _params(probabilities={**NO_TRANSFORMS, name: 1.0}, strength_start=1.0, strength_end=1.0, **changes)


def _read(folder: Path, clip: Clip) -> np.ndarray:
    audio, rate = sf.read(folder / clip.path, dtype="float32")
    assert rate == SR and audio.ndim == 1
    return audio


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _beat_seconds(audio: np.ndarray) -> float:
    """The beat period, from the autocorrelation of the onset envelope (clicks and notes fall on beats)."""
    hop = 128
    envelope = librosa.onset.onset_strength(y=audio, sr=SR, hop_length=hop)
    envelope = envelope - envelope.mean()
    correlation = np.correlate(envelope, envelope, mode="full")[len(envelope) - 1 :]
    low, high = int(0.4 * SR / hop), int(0.9 * SR / hop)  # periods of 67 to 150 BPM
    return (low + int(np.argmax(correlation[low:high]))) * hop / SR


def _reseed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def test_same_seed_same_bytes_other_seed_other_audio(corpus: Path, tmp_path: Path):
    # Noise on every copy: audiomentations draws it from the global generators.
    probabilities = {**AugmentParams().probabilities, "noise": 1.0}
    params = _params(copies=2, strength_start=0.5, strength_end=1.0, polymix=0.3, probabilities=probabilities)
    _reseed_globals(1)
    augment.augment_corpus(corpus, tmp_path / "a", DATA, params)
    after = (random.random(), np.random.random())
    _reseed_globals(1)
    assert after == (random.random(), np.random.random())  # the global generators are left as found
    _reseed_globals(2)  # as another process would find them
    augment.augment_corpus(corpus, tmp_path / "b", DATA, params)
    augment.augment_corpus(corpus, tmp_path / "c", DATA, replace(params, seed=1))
    first = _snapshot(tmp_path / "a")
    assert first == _snapshot(tmp_path / "b")
    other = _snapshot(tmp_path / "c")
    assert first.keys() == other.keys()
    assert first[MANIFEST_FILE] != other[MANIFEST_FILE]
    assert any(first[name] != other[name] for name in first if name.endswith(".flac"))


def test_only_train_clips_are_copied_and_keep_their_source(corpus: Path, tmp_path: Path, originals: dict[str, Clip]):
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, _params(copies=2))
    train = {clip.id for clip in originals.values() if clip.split == "train"}
    assert {clip.id for clip in clips} == {f"{name}-aug{i}" for name in train for i in range(2)}
    for clip in clips:
        original = originals[clip.labels["augmentation"]["of"]]
        assert (clip.split, clip.source) == ("train", original.source)
    files = {str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out" / "audio").iterdir()}
    assert files == {clip.path for clip in clips}
    assert read_manifest(tmp_path / "out") == clips


# chroma_cqt's lowest octaves find a 2 s clip short; the key estimate does not need them.
@pytest.mark.filterwarnings("ignore:n_fft=1024 is too large:UserWarning")
def test_pitch_shift_moves_key_label_caption_and_audio(corpus: Path, tmp_path: Path, originals: dict[str, Clip]):
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, _only("pitch_shift"))
    shifted = [clip for clip in clips if clip.labels.get("key")]
    assert len(shifted) == len(TRAIN_KEYS)
    for clip in shifted:
        original = originals[clip.labels["augmentation"]["of"]]
        semitones = clip.labels["augmentation"]["transforms"]["pitch_shift"]["semitones"]
        assert semitones != 0
        root = (original.labels["root"] + semitones) % 12
        new_key = key_name(root, original.labels["mode"])
        assert (clip.labels["root"], clip.labels["key"]) == (root, new_key)
        assert clip.labels["tempo"] == original.labels["tempo"]
        assert new_key in clip.caption and original.labels["key"] not in clip.caption
        assert estimate_key(_read(tmp_path / "out", clip), SR) == (root, original.labels["mode"])


def test_time_stretch_moves_tempo_label_caption_and_beat(corpus: Path, tmp_path: Path, originals: dict[str, Clip]):
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, _only("time_stretch"))
    stretched = [clip for clip in clips if clip.labels.get("tempo")]
    assert len(stretched) == len(TRAIN_KEYS)
    for clip in stretched:
        original = originals[clip.labels["augmentation"]["of"]]
        factor = clip.labels["augmentation"]["transforms"]["time_stretch"]["factor"]
        tempo = clip.labels["tempo"]
        assert tempo == round(original.labels["tempo"] * factor) != original.labels["tempo"]
        assert f"{tempo} bpm" in clip.caption.lower()
        assert clip.labels["key"] == original.labels["key"]
        audio = _read(tmp_path / "out", clip)
        assert _beat_seconds(audio) == pytest.approx(60.0 / tempo, rel=0.03)
        assert _beat_seconds(_read(corpus, original)) == pytest.approx(60.0 / original.labels["tempo"], rel=0.03)
        assert len(audio) / SR == pytest.approx(min(SECONDS, SECONDS / factor), abs=0.01)


def test_unlabelled_clips_keep_tempo_key_and_caption(corpus: Path, tmp_path: Path):
    everything = dict.fromkeys(augment.TRANSFORMS, 1.0)
    params = _params(copies=3, probabilities=everything, strength_start=0.6, strength_end=1.0)
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, params)
    for clip in clips:
        applied = set(clip.labels["augmentation"]["transforms"])
        if clip.labels["augmentation"]["of"] == "street":
            assert clip.caption == INGESTED_CAPTION
            assert applied == set(augment.TRANSFORMS) - {"time_stretch", "pitch_shift"}
            assert set(clip.labels) == {"augmentation"}
        else:
            assert {"pitch_shift", "time_stretch"} <= applied


def test_polymix_mixes_audio_and_merges_captions_and_labels(corpus: Path, tmp_path: Path, originals: dict[str, Clip]):
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, _params(probabilities=NO_TRANSFORMS, polymix=1.0))
    for clip in clips:
        first, second = (originals[name] for name in clip.labels["mix_of"])
        assert first.id == clip.labels["augmentation"]["of"] and first.source != second.source
        assert clip.caption == merge_captions(first.caption, second.caption)
        assert set(clip.labels["genres"]) == {part.labels["genre"] for part in (first, second) if part.labels}
        assert "tempo" not in clip.labels and "key" not in clip.labels
        # The output is a*first + b*second with the drawn gain's proportions (and a common peak scaling).
        basis = np.stack([_read(corpus, first), _read(corpus, second)], axis=1)
        (a, b), *_ = np.linalg.lstsq(basis, _read(tmp_path / "out", clip), rcond=None)
        assert a / (a + b) == pytest.approx(clip.labels["augmentation"]["transforms"]["polymix"]["gain"], abs=0.01)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_curriculum_strength_rises_across_copies(corpus: Path, tmp_path: Path, schedule: str):
    params = _params(copies=4, strength_start=0.1, strength_end=0.9, schedule=schedule, probabilities=NO_TRANSFORMS)
    strengths = augment.curriculum(params)
    assert strengths[0] == 0.1 and strengths[-1] == 0.9
    assert all(a < b for a, b in itertools.pairwise(strengths))
    linear = augment.curriculum(replace(params, schedule="linear"))
    # The cosine ramp eases in: its early copies are gentler than the linear ramp's.
    assert (strengths[1] < linear[1]) == (schedule == "cosine")
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, params)
    for clip in clips:
        record = clip.labels["augmentation"]
        assert record["strength"] == strengths[record["copy"]]
    assert augment.curriculum(replace(params, copies=1)) == [0.1]


def test_strength_makes_transforms_likelier_and_stronger(corpus: Path, tmp_path: Path):
    gentle = augment.augment_corpus(
        corpus, tmp_path / "a", DATA, _params(copies=3, strength_start=0.1, strength_end=0.1)
    )
    strong = augment.augment_corpus(
        corpus, tmp_path / "b", DATA, _params(copies=3, strength_start=0.9, strength_end=0.9)
    )

    def applied(clips: list[Clip]) -> int:
        return sum(len(clip.labels["augmentation"]["transforms"]) for clip in clips)

    def worst_snr(clips: list[Clip]) -> float:
        noise = [clip.labels["augmentation"]["transforms"].get("noise", {}).get("snr_db", 99.0) for clip in clips]
        return min(noise)

    assert applied(strong) > applied(gentle)
    assert worst_snr(strong) < worst_snr(gentle)


def test_durations_are_true_and_nothing_clips(corpus: Path, tmp_path: Path):
    everything = dict.fromkeys(augment.TRANSFORMS, 1.0)
    params = _params(copies=2, probabilities=everything, strength_start=1.0, strength_end=1.0, polymix=0.5)
    clips = augment.augment_corpus(corpus, tmp_path / "out", DATA, params)
    for clip in clips:
        info = sf.info(tmp_path / "out" / clip.path)
        assert (info.channels, info.samplerate, clip.sample_rate) == (1, SR, SR)
        assert clip.duration == pytest.approx(info.duration, abs=1e-9)
        assert clip.duration <= SECONDS
        assert np.abs(_read(tmp_path / "out", clip)).max() <= augment.PEAK + 1e-4


def test_killed_run_resumes_to_the_same_result(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    params = _params(copies=2, strength_start=0.5, strength_end=1.0, polymix=0.3)
    augment.augment_corpus(corpus, tmp_path / "whole", DATA, params)
    render, calls = augment.render_copy, []

    def crash_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[0].id)
        return render(*args, **kwargs)

    monkeypatch.setattr(augment, "render_copy", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        augment.augment_corpus(corpus, tmp_path / "resumed", DATA, params)
    assert not (tmp_path / "resumed").exists()
    done = calls.copy()

    def counting(*args, **kwargs):
        calls.append(args[0].id)
        return render(*args, **kwargs)

    monkeypatch.setattr(augment, "render_copy", counting)
    stale = tmp_path / ".resumed.partial-000000000000"  # left by a killed run with other parameters
    stale.mkdir()
    clips = augment.augment_corpus(corpus, tmp_path / "resumed", DATA, params)
    assert set(calls[len(done) :]) == {clip.id for clip in clips} - set(done)
    assert _snapshot(tmp_path / "resumed") == _snapshot(tmp_path / "whole")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_bad_params_are_named():
    with pytest.raises(ParamsError, match="warp"):
        augment.check_params(_params(probabilities={"warp": 0.5}))
    with pytest.raises(ParamsError, match="schedule"):
        augment.check_params(_params(schedule="exponential"))
    with pytest.raises(ParamsError, match="copies"):
        augment.check_params(_params(copies=0))


def test_cli_writes_and_reports_or_fails_in_one_line(corpus: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {"sample_rate": SR}, "augment": {"copies": 1}}))
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(augment.app, ["--params", str(params), "--corpus", str(corpus), "--out", str(out)])
    assert result.exit_code == 0, result.output
    clips = read_manifest(out)
    minutes = sum(clip.duration for clip in clips) / 60
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"wrote {len(clips)} augmented clips ({minutes:.1f} min of audio) to {out}"
    )

    missing = runner.invoke(augment.app, ["--params", str(params), "--corpus", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"error: corpus folder {tmp_path / 'nope'} does not exist"

    params.write_text(json.dumps({"augment": {"copies": 0}}))
    bad = runner.invoke(augment.app, ["--params", str(params), "--corpus", str(corpus), "--out", str(out)])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: augment.copies")
