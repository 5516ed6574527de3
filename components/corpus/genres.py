"""What each genre of the rendered corpus sounds like: tempo range, instruments, harmony, grooves.

Instruments are General MIDI programs (0-based) as the pretty_midi SoundFont plays them; drum kits
are GM drum-bank programs on channel 10. The names are the words captions use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    name: str  # as a caption says it
    program: int  # General MIDI program, 0-based


@dataclass(frozen=True)
class Genre:
    name: str
    tempo: tuple[int, int]  # BPM range, inclusive
    minor_share: float  # how often a piece is in a minor key
    leads: tuple[Instrument, ...]
    harmony: tuple[Instrument, ...]
    basses: tuple[Instrument, ...]
    bass_style: str  # walking, root, octave, syncopated, sustained, alberti
    comping: str  # block, arpeggio, pad, strum, stabs
    drums: str | None  # caption words for the kit, None for no drums
    drum_kit: int  # GM drum program (0 standard, 8 room, 16 power, 24 electronic, 25 TR-808, 32 jazz, 40 brush)
    groove: str  # drum pattern name (see compose.DRUM_PATTERNS)
    # Roman numerals, one chord per bar. Each starts on the tonic and has a dominant or a return to the
    # tonic, so the key a piece is labelled with is the key it sounds in.
    progressions: tuple[tuple[str, ...], ...]
    swing: float  # 0 straight; 0.33 makes off-beat eighths late (triplet feel)
    melody_density: float  # melody notes per beat, on average
    moods_major: tuple[str, ...]
    moods_minor: tuple[str, ...]


def _i(name: str, program: int) -> Instrument:
    return Instrument(name, program)


GENRES: dict[str, Genre] = {
    g.name: g
    for g in (
        Genre(
            name="jazz",
            tempo=(80, 160),
            minor_share=0.3,
            leads=(_i("saxophone", 66), _i("trumpet", 56), _i("vibraphone", 11), _i("clarinet", 71)),
            harmony=(_i("piano", 0), _i("electric piano", 4), _i("jazz guitar", 26)),
            basses=(_i("walking bass", 32),),
            bass_style="walking",
            comping="block",
            drums="brushed drums",
            drum_kit=40,
            groove="swing",
            progressions=(("I", "vi", "ii", "V"), ("I", "IV", "ii", "V"), ("I", "ii", "V", "I"), ("i", "iv", "V", "i")),
            swing=0.33,
            melody_density=1.5,
            moods_major=("laid-back", "smooth", "relaxed", "warm"),
            moods_minor=("smoky", "late-night", "wistful"),
        ),
        Genre(
            name="rock",
            tempo=(100, 160),
            minor_share=0.4,
            leads=(_i("overdriven guitar", 29), _i("distorted guitar", 30)),
            harmony=(_i("electric guitar", 27), _i("rock organ", 18)),
            basses=(_i("bass guitar", 33), _i("picked bass", 34)),
            bass_style="root",
            comping="strum",
            drums="rock drums",
            drum_kit=16,
            groove="rock",
            progressions=(("I", "V", "vi", "IV"), ("I", "IV", "V", "I"), ("i", "VI", "VII", "i")),
            swing=0.0,
            melody_density=1.25,
            moods_major=("energetic", "driving", "upbeat"),
            moods_minor=("gritty", "dark", "aggressive"),
        ),
        Genre(
            name="pop",
            tempo=(90, 130),
            minor_share=0.25,
            leads=(_i("synth lead", 80), _i("flute", 73), _i("bright piano", 1)),
            harmony=(_i("piano", 0), _i("acoustic guitar", 25), _i("warm pad", 89)),
            basses=(_i("electric bass", 33), _i("synth bass", 38)),
            bass_style="octave",
            comping="arpeggio",
            drums="pop drums",
            drum_kit=0,
            groove="pop",
            progressions=(("I", "V", "vi", "IV"), ("I", "vi", "IV", "V"), ("i", "iv", "V", "i")),
            swing=0.0,
            melody_density=1.25,
            moods_major=("happy", "catchy", "bright", "cheerful"),
            moods_minor=("bittersweet", "emotional"),
        ),
        Genre(
            name="classical",
            tempo=(60, 120),
            minor_share=0.4,
            leads=(_i("violin", 40), _i("flute", 73), _i("oboe", 68), _i("cello", 42)),
            harmony=(_i("string ensemble", 48), _i("piano", 0), _i("harpsichord", 6)),
            basses=(_i("cello", 42), _i("contrabass", 43)),
            bass_style="alberti",
            comping="arpeggio",
            drums=None,
            drum_kit=48,
            groove="none",
            progressions=(("I", "IV", "V", "I"), ("I", "vi", "IV", "V"), ("i", "iv", "V", "i")),
            swing=0.0,
            melody_density=1.5,
            moods_major=("elegant", "graceful", "serene"),
            moods_minor=("dramatic", "melancholic", "solemn"),
        ),
        Genre(
            name="electronic",
            tempo=(118, 140),
            minor_share=0.6,
            leads=(_i("saw lead", 81), _i("square lead", 80), _i("synth brass", 62)),
            harmony=(_i("synth pad", 90), _i("synth strings", 50)),
            basses=(_i("synth bass", 38), _i("deep synth bass", 39)),
            bass_style="octave",
            comping="stabs",
            drums="electronic drums",
            drum_kit=24,
            groove="four_on_the_floor",
            progressions=(("i", "VI", "VII", "i"), ("I", "IV", "V", "I"), ("i", "iv", "VI", "V")),
            swing=0.0,
            melody_density=2.0,
            moods_major=("blissful", "energetic", "uplifting"),
            moods_minor=("hypnotic", "dark", "pulsing"),
        ),
        Genre(
            name="ambient",
            tempo=(60, 85),
            minor_share=0.5,
            leads=(_i("choir", 52), _i("celesta", 8), _i("music box", 10)),
            harmony=(_i("warm pad", 89), _i("string ensemble", 49), _i("new age pad", 88)),
            basses=(_i("sustained bass", 39),),
            bass_style="sustained",
            comping="pad",
            drums=None,
            drum_kit=0,
            groove="none",
            progressions=(("I", "IV", "I", "V"), ("I", "vi", "IV", "V"), ("i", "VI", "iv", "i")),
            swing=0.0,
            melody_density=0.5,
            moods_major=("calm", "peaceful", "dreamy", "floating"),
            moods_minor=("meditative", "mysterious", "dreamy"),
        ),
        Genre(
            name="hip hop",
            tempo=(80, 100),
            minor_share=0.7,
            leads=(_i("electric piano", 4), _i("muted trumpet", 59), _i("synth lead", 80)),
            harmony=(_i("electric piano", 4), _i("string ensemble", 48)),
            basses=(_i("deep bass", 38), _i("fingered bass", 33)),
            bass_style="syncopated",
            comping="stabs",
            drums="a boom-bap beat",
            drum_kit=25,
            groove="boom_bap",
            progressions=(("i", "VI", "iv", "V"), ("i", "iv", "i", "V"), ("I", "IV", "V", "I")),
            swing=0.15,
            melody_density=1.0,
            moods_major=("chill", "confident", "groovy"),
            moods_minor=("moody", "gritty", "brooding"),
        ),
        Genre(
            name="folk",
            tempo=(80, 130),
            minor_share=0.35,
            leads=(_i("fiddle", 110), _i("banjo", 105), _i("harmonica", 22), _i("accordion", 21)),
            harmony=(_i("acoustic guitar", 24), _i("steel guitar", 25)),
            basses=(_i("acoustic bass", 32),),
            bass_style="root",
            comping="strum",
            drums="light percussion",
            drum_kit=8,
            groove="folk",
            progressions=(("I", "IV", "I", "V"), ("I", "V", "IV", "I"), ("i", "VII", "VI", "V")),
            swing=0.0,
            melody_density=1.5,
            moods_major=("cheerful", "rustic", "warm", "nostalgic"),
            moods_minor=("melancholic", "haunting"),
        ),
        Genre(
            name="reggae",
            tempo=(70, 95),
            minor_share=0.3,
            leads=(_i("organ", 16), _i("trombone", 57), _i("trumpet", 56)),
            harmony=(_i("clean guitar", 27), _i("organ", 16)),
            basses=(_i("bass guitar", 33),),
            bass_style="syncopated",
            comping="stabs",
            drums="one-drop drums",
            drum_kit=0,
            groove="one_drop",
            progressions=(("I", "IV", "I", "V"), ("I", "vi", "IV", "V"), ("i", "iv", "i", "V")),
            swing=0.1,
            melody_density=1.0,
            moods_major=("sunny", "laid-back", "easygoing"),
            moods_minor=("soulful", "rootsy"),
        ),
        Genre(
            name="blues",
            tempo=(70, 120),
            minor_share=0.2,
            leads=(_i("harmonica", 22), _i("electric guitar", 27), _i("saxophone", 65)),
            harmony=(_i("piano", 0), _i("organ", 16)),
            basses=(_i("bass guitar", 33), _i("upright bass", 32)),
            bass_style="walking",
            comping="block",
            drums="shuffle drums",
            drum_kit=0,
            groove="shuffle",
            progressions=(("I", "IV", "I", "V"), ("I", "I", "IV", "I"), ("I", "IV", "V", "IV")),
            swing=0.33,
            melody_density=1.25,
            moods_major=("soulful", "gritty", "swaggering"),
            moods_minor=("mournful", "lonesome"),
        ),
    )
}
