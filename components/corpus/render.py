"""Rendering MIDI to audio offline: tinysoundfont plays the General MIDI SoundFont that the
pretty_midi package ships (TimGM6mb.sf2). No network, no external synthesiser.

Each piece gets a fresh synthesiser (8 ms with the SoundFont's bytes cached): a reused one keeps
state across pieces even after every voice is cut, and a piece must render to the same samples
whatever was rendered before it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pretty_midi
import tinysoundfont

SOUNDFONT = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
DRUM_CHANNEL = 9


@cache
def _soundfont_bytes() -> bytes:
    return SOUNDFONT.read_bytes()


def _synth(sample_rate: int) -> tuple[tinysoundfont.Synth, int]:
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    return synth, synth.sfload(_soundfont_bytes())


def _events(midi: pretty_midi.PrettyMIDI) -> list[tuple[float, int, int, int, int]]:
    """(time, order, channel, pitch, velocity) sorted; order 0 = note-off first at equal times."""
    events = []
    melodic = iter(c for c in range(16) if c != DRUM_CHANNEL)
    for instrument in midi.instruments:
        channel = DRUM_CHANNEL if instrument.is_drum else next(melodic)
        for note in instrument.notes:
            events.append((note.start, 1, channel, note.pitch, note.velocity))
            events.append((note.end, 0, channel, note.pitch, 0))
    return sorted(events)


def render(midi: pretty_midi.PrettyMIDI, sample_rate: int, seconds: float) -> np.ndarray:
    """Mono float32 audio of the first `seconds` of `midi`, peak-normalised to 0.9 with 10 ms fades."""
    synth, soundfont = _synth(sample_rate)
    melodic = iter(c for c in range(16) if c != DRUM_CHANNEL)
    for instrument in midi.instruments:
        channel = DRUM_CHANNEL if instrument.is_drum else next(melodic)
        synth.program_select(channel, soundfont, 0, instrument.program, is_drums=instrument.is_drum)
    total = round(seconds * sample_rate)
    buffer = memoryview(bytearray(total * 2 * 4))  # stereo float32
    done = 0
    for time, order, channel, pitch, velocity in _events(midi):
        at = min(total, round(time * sample_rate))
        if at > done:
            synth.generate_simple(at - done, buffer=buffer[done * 8 : at * 8])
            done = at
        if done >= total:
            break
        if order:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if done < total:
        synth.generate_simple(total - done, buffer=buffer[done * 8 :])
    audio = np.frombuffer(buffer, dtype=np.float32).reshape(-1, 2).mean(axis=1)
    fade = min(len(audio) // 2, int(0.01 * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    audio = audio.copy()
    audio[:fade] *= ramp
    audio[len(audio) - fade :] *= ramp[::-1]
    peak = float(np.max(np.abs(audio)))
    return (audio * (0.9 / peak)).astype(np.float32) if peak > 0 else audio
