"""basic-pitch's notes (model/transcription.py): it hears rendered notes that are known, as basic-pitch's own
`predict` hears them, and the key, density and contour read from notes are right on crafted and rendered clips.

Expected values come from the MIDI that was rendered and from hand-built note lists, never from the module;
note matching is mir_eval's transcription metric (50 ms onsets, pitch within 50 cents, offsets ignored).
"""

from pathlib import Path

import mir_eval
import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from components.corpus.compose import compose
from components.corpus.render import render
from model import music_features, transcription
from model.transcription import Note

pytestmark = pytest.mark.integration

SR = 32_000
C_MAJOR_SCALE = (60, 62, 64, 65, 67, 69, 71, 72)


def _scale_midi() -> pretty_midi.PrettyMIDI:
    """A piano playing the C major scale up an octave, one note each 0.4 s."""
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for index, pitch in enumerate(C_MAJOR_SCALE):
        start = 0.1 + 0.4 * index
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=start, end=start + 0.35))
    midi.instruments.append(piano)
    return midi


def _onset_f1(midi: pretty_midi.PrettyMIDI, notes: list[Note], seconds: float) -> float:
    """mir_eval's note F1 (onset within 50 ms and pitch within 50 cents) of `notes` against the pitched notes of
    `midi` that start before the clip's last 0.1 s (later ones are too short to transcribe)."""
    truth = [n for part in midi.instruments if not part.is_drum for n in part.notes if n.start < seconds - 0.1]
    reference = np.array([[n.start, max(n.end, n.start + 0.01)] for n in truth])
    estimated = np.array([[n.start, n.end] for n in notes]).reshape(-1, 2)
    return mir_eval.transcription.precision_recall_f1_overlap(
        reference,
        mir_eval.util.midi_to_hz(np.array([n.pitch for n in truth])),
        estimated,
        mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float)),
        offset_ratio=None,
    )[2]


@pytest.fixture(scope="module")
def scale() -> tuple[np.ndarray, list[Note]]:
    audio = render(_scale_midi(), SR, 3.6)
    return audio, transcription.transcribe(audio, SR)


def test_transcription_hears_a_rendered_scale(scale: tuple[np.ndarray, list[Note]]) -> None:
    _, notes = scale
    assert _onset_f1(_scale_midi(), notes, 3.6) >= 0.85, notes
    assert transcription.key_from_notes(notes) == (0, "major")


def test_transcription_is_basic_pitchs_own_predict(scale: tuple[np.ndarray, list[Note]], tmp_path: Path) -> None:
    """The same notes as basic-pitch's file-based `predict` with its defaults (it loads the file with librosa)."""
    from basic_pitch import inference

    audio, notes = scale
    sf.write(tmp_path / "scale.wav", audio, SR, subtype="FLOAT")  # float: 16-bit samples would not be the same audio
    model = transcription._basic_pitch()[-1]
    _, _, events = inference.predict(tmp_path / "scale.wav", model)
    theirs = sorted((round(float(s), 6), round(float(e), 6), int(p), round(float(a), 5)) for s, e, p, a, _ in events)
    ours = sorted((round(n.start, 6), round(n.end, 6), n.pitch, round(n.amplitude, 5)) for n in notes)
    assert ours == theirs


def test_key_density_and_contour_of_crafted_notes() -> None:
    scale = [Note(i * 0.5, i * 0.5 + 0.5, pitch, 1.0) for i, pitch in enumerate(C_MAJOR_SCALE)]
    histogram = transcription.pitch_class_histogram(scale)
    assert histogram[0] == pytest.approx(0.25) and histogram[2] == pytest.approx(0.125) and histogram[1] == 0.0
    assert transcription.key_from_notes(scale) == (0, "major")
    # A harmonic minor, its tonic held longest: the raised seventh (G#) says minor, not C major.
    a_minor = [Note(0.0, 2.0, 57, 1.0)]
    a_minor += [Note(2.0 + i, 3.0 + i, pitch, 1.0) for i, pitch in enumerate((59, 60, 62, 64, 65, 68))]
    assert transcription.key_from_notes(a_minor) == (9, "minor")
    assert transcription.key_from_notes([]) is None and transcription.key_from_notes(scale[:1]) is None
    assert transcription.note_density(scale, 4.0) == 2.0
    # Two voices for the first second, the upper one is the contour; a gap in the last quarter is NaN.
    voices = [Note(0.0, 1.0, 48, 1.0), Note(0.0, 1.0, 67, 1.0), Note(1.0, 3.0, 72, 1.0)]
    np.testing.assert_array_equal(transcription.melody_contour(voices, 4.0, points=4), [67, 72, 72, np.nan])


def test_both_key_estimators_beat_chance_on_rendered_clips() -> None:
    """On one 4 s clip of each of four genres: the transcription finds a fair share of the composed notes, and
    each estimator's key is right more often than chance (1/24 per clip) and scores well above chance's ~0.08."""
    scores = {"chroma": [], "notes": []}
    f1 = []
    for index, genre in enumerate(("blues", "classical", "folk", "pop")):
        piece = compose(genre, 2000 + index, 4.0)
        audio = render(piece.midi, SR, 4.0)
        true = (piece.labels["root"], piece.labels["mode"])
        notes = transcription.transcribe(audio, SR)
        f1.append(_onset_f1(piece.midi, notes, 4.0))
        by_notes = transcription.key_from_notes(notes)
        scores["notes"].append(music_features.key_score(by_notes, true) if by_notes else 0.0)
        scores["chroma"].append(music_features.key_score(music_features.estimate_key(audio, SR), true))
    assert np.mean(f1) >= 0.3, f1
    for name, values in scores.items():
        assert sum(value == 1.0 for value in values) >= 2 and np.mean(values) >= 0.4, (name, values)
