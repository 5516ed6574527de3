"""Procedural composition: a short piece in a genre, with labels that are true by construction.

A piece is a chord progression (one chord per bar, from the genre's Roman-numeral progressions) in
a key, a melody built from a two-bar motif that is repeated and varied, a bass line and a comping
part in the genre's styles, and a drum groove on channel 10. Everything is drawn from one numpy
Generator, so a seed fixes the piece. The result is a `pretty_midi.PrettyMIDI` plus its labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pretty_midi

from components.corpus.genres import GENRES, Genre, Instrument
from model.music_features import key_name

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7}
# Used when a genre lists no progression in the piece's mode.
DEFAULT_PROGRESSIONS = {
    "major": (("I", "IV", "V", "I"), ("I", "V", "vi", "IV"), ("I", "vi", "IV", "V")),
    "minor": (("i", "VI", "VII", "i"), ("i", "iv", "V", "i"), ("i", "iv", "VI", "V")),
}

# General MIDI drum keys.
KICK, SNARE, RIM, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, RIDE, TAMBOURINE, SHAKER = (
    36,
    38,
    37,
    39,
    42,
    44,
    46,
    51,
    54,
    70,
)
# One bar on a sixteenth grid (0..15): {drum key: positions}. Velocity accents follow the position.
DRUM_PATTERNS: dict[str, dict[int, tuple[int, ...]]] = {
    "none": {},
    "rock": {KICK: (0, 8, 10), SNARE: (4, 12), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "pop": {KICK: (0, 6, 8), SNARE: (4, 12), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "four_on_the_floor": {KICK: (0, 4, 8, 12), CLAP: (4, 12), OPEN_HAT: (2, 6, 10, 14), CLOSED_HAT: (0, 4, 8, 12)},
    "boom_bap": {KICK: (0, 7, 10), SNARE: (4, 12), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "swing": {KICK: (0, 8), RIDE: (0, 4, 6, 8, 12, 14), PEDAL_HAT: (4, 12), SNARE: (12,)},
    "shuffle": {KICK: (0, 8), SNARE: (4, 12), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "folk": {KICK: (0, 8), TAMBOURINE: (4, 12), SHAKER: (0, 2, 4, 6, 8, 10, 12, 14)},
    "one_drop": {KICK: (8,), RIM: (8,), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
}


@dataclass
class Piece:
    midi: pretty_midi.PrettyMIDI
    labels: dict[str, Any]


def chord_pitches(numeral: str, root: int, mode: str, sevenths: bool) -> list[int]:
    """Pitch classes (relative to C) of a Roman-numeral chord in a key: case gives the quality."""
    degree = ROMAN[numeral.lower()] - 1
    chord_root = (root + SCALES[mode][degree]) % 12
    third = 4 if numeral.isupper() else 3
    pitches = [chord_root, chord_root + third, chord_root + 7]
    if sevenths:
        dominant = numeral.isupper() and numeral.lower() == "v"
        seventh = 10 if (dominant or numeral.islower()) else 11
        pitches.append(chord_root + seventh)
    return pitches


def _nearest(pitch_class: int, around: int) -> int:
    """The MIDI note of `pitch_class` closest to `around`."""
    base = around - ((around - pitch_class) % 12)
    return base if around - base <= 6 else base + 12


class _Composer:
    def __init__(self, genre: Genre, rng: np.random.Generator, seconds: float):
        self.genre, self.rng = genre, rng
        self.mode = "minor" if rng.random() < genre.minor_share else "major"
        self.root = int(rng.integers(12))
        self.tempo = int(rng.integers(genre.tempo[0], genre.tempo[1] + 1))
        self.beat = 60.0 / self.tempo
        self.bars = int(np.ceil(seconds / (4 * self.beat))) + 1
        # A progression is in minor when its tonic chord is minor ("i"), in major when it is "I".
        options = [p for p in genre.progressions if ("i" in p) == (self.mode == "minor")]
        progressions = options or list(DEFAULT_PROGRESSIONS[self.mode])
        self.progression = progressions[rng.integers(len(progressions))]
        self.sevenths = genre.name in ("jazz", "blues")
        self.scale = [(self.root + step) % 12 for step in SCALES[self.mode]]

    # time on the sixteenth grid of bar `bar`, with swing on the off-beat eighths
    def time(self, bar: int, sixteenth: float) -> float:
        beat, within = divmod(sixteenth, 4)
        if self.genre.swing and abs(within - 2) < 1e-9:
            within += 2 * self.genre.swing
        return (bar * 4 + beat + within / 4) * self.beat

    def chord(self, bar: int) -> list[int]:
        return chord_pitches(self.progression[bar % len(self.progression)], self.root, self.mode, self.sevenths)

    def note(self, part: pretty_midi.Instrument, pitch: int, start: float, length: float, velocity: int) -> None:
        jitter = self.rng.normal(0, 0.004)  # a touch of human timing, far below a sixteenth
        velocity = int(np.clip(velocity + self.rng.integers(-6, 7), 20, 127))
        begin = max(0.0, start + jitter)
        part.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(pitch), start=begin, end=begin + length))

    def melody(self, part: pretty_midi.Instrument) -> None:
        motif = self._motif(self.genre.melody_density)
        for bar in range(0, self.bars, 2):
            variation = bar // 2 % 2 == 1
            for sixteenth, step, length in motif:
                if variation and sixteenth > 0 and self.rng.random() < 0.3:
                    step += int(self.rng.choice([-1, 1]))
                target_bar = bar + sixteenth // 16
                if target_bar >= self.bars:
                    break
                pitch = self._melody_pitch(step, target_bar, strong=sixteenth % 8 == 0)
                self.note(part, pitch, self.time(target_bar, sixteenth % 16), length * self.beat / 4 * 0.95, 88)

    def _melody_pitch(self, step: int, bar: int, strong: bool) -> int:
        """A scale step as a MIDI note from middle C up; on strong beats, the nearest tone of the chord,
        which keeps melody and harmony agreeing about the key."""
        octave, index = divmod(step, 7)
        pitch = 60 + (self.scale[index] - self.root) % 12 + self.root % 12 + 12 * octave
        if strong:
            tones = {pc % 12 for pc in self.chord(bar)}
            pitch = min((p for p in range(pitch - 2, pitch + 3) if p % 12 in tones), key=lambda p: abs(p - pitch))
        return pitch if pitch >= 55 else pitch + 12

    def _motif(self, density: float) -> list[tuple[int, int, int]]:
        """Two bars of (sixteenth position, scale step, length in sixteenths): it starts on the tonic
        and its last note falls back to it, as simple tunes do."""
        lengths = [2, 4, 4, 8] if density < 1.0 else [2, 2, 4, 4, 6] if density < 1.75 else [2, 2, 2, 4]
        notes, position, step = [], 0, 0
        while position < 32:
            length = int(self.rng.choice(lengths))
            if self.rng.random() > 0.15 or position == 0:  # an occasional rest
                notes.append((position, step, min(length, 32 - position)))
            step = int(np.clip(step + self.rng.choice([-2, -1, -1, 1, 1, 2, 0]), -3, 9))
            position += length
        last_position, _, last_length = notes[-1]
        notes[-1] = (last_position, 7 if notes[-1][1] > 3 else 0, last_length)
        return notes

    def comping(self, part: pretty_midi.Instrument) -> None:
        style = self.genre.comping
        for bar in range(self.bars):
            voicing = [_nearest(pc, 62) for pc in self.chord(bar)]
            if style == "pad":
                for pitch in voicing:
                    self.note(part, pitch, self.time(bar, 0), 4 * self.beat, 60)
            elif style == "block":
                for pos in (0, 6) if self.genre.swing else (0, 8):
                    for pitch in voicing:
                        self.note(part, pitch, self.time(bar, pos), 1.5 * self.beat, 66)
            elif style == "strum":
                for pos in range(0, 16, 2):
                    for order, pitch in enumerate(voicing):
                        self.note(
                            part, pitch, self.time(bar, pos) + 0.008 * order, 0.45 * self.beat, 72 - 6 * (pos % 4)
                        )
            elif style == "stabs":
                for pos in (2, 6, 10, 14):
                    for pitch in voicing:
                        self.note(part, pitch, self.time(bar, pos), 0.3 * self.beat, 70)
            else:  # arpeggio
                tones = [*voicing, voicing[0] + 12]
                for index, pos in enumerate(range(0, 16, 2)):
                    self.note(part, tones[index % len(tones)], self.time(bar, pos), 0.5 * self.beat, 64)

    def bass(self, part: pretty_midi.Instrument) -> None:
        style = self.genre.bass_style
        for bar in range(self.bars):
            chord = self.chord(bar)
            root, fifth = _nearest(chord[0], 40), _nearest(chord[2], 43)
            if style == "walking":
                next_root = _nearest(self.chord(bar + 1)[0], 40)
                line = [root, _nearest(chord[1], 43), fifth, next_root + (1 if self.rng.random() < 0.5 else -1)]
                for beat, pitch in enumerate(line):
                    self.note(part, pitch, self.time(bar, 4 * beat), 0.9 * self.beat, 90)
            elif style == "octave":
                for pos in range(0, 16, 2):
                    self.note(part, root + (12 if pos % 4 else 0), self.time(bar, pos), 0.45 * self.beat, 92)
            elif style == "syncopated":
                for pos, pitch in ((0, root), (6, root), (10, fifth), (12, root)):
                    self.note(part, pitch, self.time(bar, pos), 0.7 * self.beat, 95)
            elif style == "sustained":
                self.note(part, root, self.time(bar, 0), 4 * self.beat, 70)
            elif style == "alberti":
                for index, pos in enumerate(range(0, 16, 2)):
                    pitch = (root, fifth, root + 12, fifth)[index % 4]
                    self.note(part, pitch, self.time(bar, pos), 0.5 * self.beat, 70)
            else:  # root
                for pos in range(0, 16, 2):
                    self.note(part, root, self.time(bar, pos), 0.45 * self.beat, 92)

    def drums(self, part: pretty_midi.Instrument) -> None:
        for bar in range(self.bars):
            for key, positions in DRUM_PATTERNS[self.genre.groove].items():
                for pos in positions:
                    accent = 100 if pos % 4 == 0 else 80
                    self.note(part, key, self.time(bar, pos), 0.1, accent)


def _pick(options: tuple[Instrument, ...], rng: np.random.Generator, avoid: set[int]) -> Instrument:
    fresh = [option for option in options if option.program not in avoid] or list(options)
    return fresh[rng.integers(len(fresh))]


def compose(genre_name: str, seed: int, seconds: float) -> Piece:
    """A piece of `genre_name` lasting at least `seconds`, fixed by `seed`."""
    genre = GENRES[genre_name]
    rng = np.random.default_rng(seed)
    composer = _Composer(genre, rng, seconds)
    lead = _pick(genre.leads, rng, set())
    harmony = _pick(genre.harmony, rng, {lead.program})
    bass = _pick(genre.basses, rng, {lead.program, harmony.program})
    midi = pretty_midi.PrettyMIDI(initial_tempo=composer.tempo)
    parts = []
    for instrument, write in ((lead, composer.melody), (harmony, composer.comping), (bass, composer.bass)):
        part = pretty_midi.Instrument(program=instrument.program, name=instrument.name)
        write(part)
        parts.append(part)
    if genre.drums:
        kit = pretty_midi.Instrument(program=genre.drum_kit, is_drum=True, name=genre.drums)
        composer.drums(kit)
        parts.append(kit)
    midi.instruments.extend(parts)
    moods = genre.moods_major if composer.mode == "major" else genre.moods_minor
    labels = {
        "genre": genre.name,
        "key": key_name(composer.root, composer.mode),
        "root": composer.root,
        "mode": composer.mode,
        "tempo": composer.tempo,
        "time_signature": "4/4",
        "mood": moods[rng.integers(len(moods))],
        "instruments": list(dict.fromkeys([lead.name, harmony.name, bass.name])),
        "drums": genre.drums,
        "programs": [lead.program, harmony.program, bass.program],
        "chords": list(composer.progression),
    }
    return Piece(midi=midi, labels=labels)
