"""The augment stage: augmented copies of the training split, with labels and captions kept true.

Each training clip gets `augment.copies` copies. Copy i has a strength that ramps, linearly or on a
cosine, from `strength_start` (copy 0) to `strength_end` (the last copy). Strength raises both how
likely each transform is (params.yaml's probabilities are those of a copy at strength 0.5) and how hard
it hits. Every choice comes from a generator seeded by (seed, clip id, copy, transform), so a rerun
writes the same bytes, and `labels["augmentation"]` records the strength and each transform's
parameters, which lets training order copies from easy to hard.

Labels stay true: a pitch shift moves the key, a time stretch the tempo, and the caption is rewritten
from the new labels. Clips whose caption cannot be rewritten (ingested audio with a free caption) only
get transforms that leave tempo and key alone, and keep their caption. Polymix mixes a clip with a
training clip of another source; the captions are merged and the labels list both clips' genres.

Valid and test clips are not copied. Each copy keeps its original's `source`, so a later split by
source cannot put a copy on the other side of its original.

    python -m components.augment --params params.yaml --corpus artifacts/data/corpus --out artifacts/data/augmented
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import soundfile as sf
import typer
from tqdm import tqdm

from components.corpus import effects
from components.corpus.captions import merge_captions, write_caption
from components.corpus.manifest import MANIFEST_FILE, Clip, ManifestError, read_manifest, write_manifest
from model.atomic_io import atomic_directory
from model.audio import write_audio
from model.music_features import key_name, parse_key
from settings import paths
from settings.params import AugmentParams, DataParams, ParamsError, fingerprint, load_section

PEAK = 0.95  # louder copies are scaled down to this, leaving headroom for 16-bit rounding
AUDIO_DIR = "audio"
SCHEDULES = ("linear", "cosine")
TRANSFORMS = ("time_stretch", "pitch_shift", *effects.EFFECTS)
_CAPTION_FIELDS = ("genre", "mood", "key", "tempo", "instruments")  # what write_caption needs


class AugmentError(ValueError):
    """The corpus cannot be augmented (missing, unreadable or inconsistent); the message names the problem."""


def _is_share(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def check_params(params: AugmentParams) -> None:
    """Raise ParamsError naming the first value of the augment section that is out of range."""
    if not isinstance(params.copies, int) or params.copies < 1:
        raise ParamsError(f"augment.copies must be a whole number of at least 1, got {params.copies!r}")
    for name in ("strength_start", "strength_end", "polymix"):
        if not _is_share(getattr(params, name)):
            raise ParamsError(f"augment.{name} must be between 0 and 1, got {getattr(params, name)!r}")
    if params.schedule not in SCHEDULES:
        raise ParamsError(f"augment.schedule must be linear or cosine, got {params.schedule!r}")
    if not isinstance(params.probabilities, dict):
        raise ParamsError("augment.probabilities must map transform names to probabilities")
    unknown = sorted(set(params.probabilities) - set(TRANSFORMS))
    if unknown:
        raise ParamsError(f"augment.probabilities: unknown {', '.join(unknown)} (known: {', '.join(TRANSFORMS)})")
    for name, value in params.probabilities.items():
        if not _is_share(value):
            raise ParamsError(f"augment.probabilities.{name} must be between 0 and 1, got {value!r}")


def curriculum(params: AugmentParams) -> list[float]:
    """The strength of each copy: strength_start for the first, strength_end for the last (if more than one)."""
    steps = [i / (params.copies - 1) if params.copies > 1 else 0.0 for i in range(params.copies)]
    if params.schedule == "cosine":
        steps = [(1 - math.cos(math.pi * t)) / 2 for t in steps]
    span = params.strength_end - params.strength_start
    return [round(params.strength_start + span * t, 4) for t in steps]


def _chance(params: AugmentParams, name: str, strength: float) -> float:
    # A transform missing from params.yaml's probabilities is off.
    return min(1.0, params.probabilities.get(name, 0.0) * 2 * strength)


def _rng(seed: int, *names: object) -> np.random.Generator:
    # hashlib, not hash(): Python salts string hashes per process, and reruns must agree.
    digest = hashlib.sha256("/".join(map(str, (seed, *names))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _rewritable(labels: dict[str, Any]) -> bool:
    """Whether a caption can be written from these labels, so tempo and key may change."""
    if any(not labels.get(name) for name in _CAPTION_FIELDS):
        return False
    try:
        parse_key(labels["key"])
    except (ValueError, AttributeError):
        return False
    return isinstance(labels["tempo"], int | float) and labels["tempo"] > 0


def _stretch(labels: dict[str, Any], rng: np.random.Generator, strength: float) -> dict[str, float] | None:
    tempo = labels["tempo"]
    new_tempo = round(tempo * effects.draw_stretch(rng, strength))
    if new_tempo == tempo:
        return None
    labels["tempo"] = new_tempo
    # The factor that lands on a whole tempo, so the label is exact rather than rounded.
    return {"factor": new_tempo / tempo}


def _shift(labels: dict[str, Any], rng: np.random.Generator, strength: float) -> dict[str, int]:
    semitones = effects.draw_semitones(rng, strength)
    root, mode = parse_key(labels["key"])
    labels.update(key=key_name(root + semitones, mode), root=(root + semitones) % 12, mode=mode)
    return {"semitones": semitones}


def _retune(
    clip: Clip, index: int, strength: float, labels: dict[str, Any], params: AugmentParams
) -> dict[str, dict[str, Any]]:
    """Time stretch and pitch shift as drawn for this copy, with tempo and key moved to match in `labels`."""
    drawn = {}
    for name, draw in (("time_stretch", _stretch), ("pitch_shift", _shift)):
        rng = _rng(params.seed, clip.id, index, name)
        if rng.random() < _chance(params, name, strength) and (parameters := draw(labels, rng, strength)):
            drawn[name] = parameters
    return drawn


def _draw_polymix(clip: Clip, index: int, train: list[Clip], params: AugmentParams) -> tuple[Clip, dict] | None:
    """The partner (a train clip of another source) and the mix's parameters, or None for no mix."""
    rng = _rng(params.seed, clip.id, index, "polymix")
    others = [other for other in train if other.source != clip.source]
    if rng.random() >= params.polymix or not others:
        return None
    partner = others[rng.integers(len(others))]
    # The gains sum to 1 and neither clip is drowned out.
    return partner, {"with": partner.id, "gain": round(float(rng.uniform(0.4, 0.6)), 3)}


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(value for value in values if value))


def _mixed_labels(first: Clip, second: Clip) -> dict[str, Any]:
    both = (first.labels, second.labels)
    instruments = [name for labels in both for name in [*(labels.get("instruments") or []), labels.get("drums")]]
    return {
        "genres": _unique([labels.get("genre") for labels in both]),
        "moods": _unique([labels.get("mood") for labels in both]),
        "instruments": _unique(instruments),
        "mix_of": [first.id, second.id],
    }


def plan_copy(
    clip: Clip, index: int, strength: float, train: list[Clip], data: DataParams, params: AugmentParams
) -> tuple[Clip, Clip | None]:
    """Copy `index` of `clip` decided before any audio is touched: its manifest entry (duration still the
    original's) and the polymix partner, if any. The entry's labels["augmentation"]["transforms"] is the
    recipe `render_copy` follows."""
    transforms: dict[str, dict[str, Any]] = {}
    partner = None
    if mix := _draw_polymix(clip, index, train, params):
        partner, transforms["polymix"] = mix
    labels = dict(clip.labels) if partner is None else _mixed_labels(clip, partner)
    if partner is None and _rewritable(labels):
        transforms.update(_retune(clip, index, strength, labels, params))
    for name, effect in effects.EFFECTS.items():
        rng = _rng(params.seed, clip.id, index, name)
        if rng.random() < _chance(params, name, strength):
            transforms[name] = effect.draw(rng, strength, data.sample_rate)
    if "time_stretch" in transforms or "pitch_shift" in transforms:
        caption = write_caption(labels, _rng(params.seed, clip.id, index, "caption"))
    elif partner is not None:
        caption = merge_captions(clip.caption, partner.caption)
    else:
        caption = clip.caption
    labels["augmentation"] = {"of": clip.id, "copy": index, "strength": strength, "transforms": transforms}
    copy_id = f"{clip.id}-aug{index}"
    entry = Clip(
        id=copy_id,
        path=f"{AUDIO_DIR}/{copy_id}.{data.audio_format}",
        duration=clip.duration,
        sample_rate=data.sample_rate,
        caption=caption,
        split="train",
        source=clip.source,
        labels=labels,
    )
    return entry, partner


def _load(corpus_dir: Path, clip: Clip, sample_rate: int) -> np.ndarray:
    path = corpus_dir / clip.path
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.SoundFileError as error:
        raise AugmentError(f"cannot read {path}: {error}") from None
    if rate != sample_rate:
        raise AugmentError(f"{path} is at {rate} Hz but data.sample_rate is {sample_rate}")
    return audio.mean(axis=1)


def _limit(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (PEAK / peak) if peak > PEAK else audio


def render_copy(entry: Clip, original: Clip, partner: Clip | None, corpus_dir: Path, sample_rate: int) -> np.ndarray:
    """The audio of a planned copy: polymix, then stretch and shift, then the other effects in order."""
    transforms = entry.labels["augmentation"]["transforms"]
    audio = _load(corpus_dir, original, sample_rate)
    if partner is not None:
        other = _load(corpus_dir, partner, sample_rate)
        length, gain = min(len(audio), len(other)), transforms["polymix"]["gain"]
        audio = _limit(gain * audio[:length] + (1 - gain) * other[:length])
    factor = transforms.get("time_stretch", {}).get("factor", 1.0)
    semitones = transforms.get("pitch_shift", {}).get("semitones", 0)
    if factor != 1.0 or semitones:
        # A slowed copy is cut back to the original length; a sped-up one stays shorter.
        length = len(audio)
        audio = effects.stretch_and_shift(audio, sample_rate, factor, semitones)[:length]
    for name, effect in effects.EFFECTS.items():
        if name in transforms:
            audio = effect.apply(audio, sample_rate, transforms[name]).astype(np.float32, copy=False)
    return _limit(audio)


def _train_clips(corpus_dir: Path) -> list[Clip]:
    clips = read_manifest(corpus_dir)
    train = sorted((clip for clip in clips if clip.split == "train"), key=lambda clip: clip.id)
    if not train:
        raise AugmentError(f"{corpus_dir / MANIFEST_FILE} has no train clips")
    if len({clip.id for clip in train}) < len(train):
        raise AugmentError(f"{corpus_dir / MANIFEST_FILE} repeats a clip id")
    return train


def _resume_key(corpus_dir: Path, data: DataParams, params: AugmentParams) -> str:
    # A staging folder is reused only by a run that would write the same files: the same parameters and
    # the same manifest (a re-rendered or re-ingested corpus has other captions and labels).
    manifest = (corpus_dir / MANIFEST_FILE).read_bytes()
    return hashlib.sha256(fingerprint(data, params).encode() + manifest).hexdigest()[:12]


def _drop_stale_staging(out_dir: Path, resume_key: str) -> None:
    # Runs killed under other parameters or another corpus can never resume: reclaim their disk. The
    # pattern is how atomic_directory names a resumable staging folder.
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        if stale.name != f".{out_dir.name}.partial-{resume_key}":
            shutil.rmtree(stale, ignore_errors=True)


@dataclass(frozen=True)
class _Run:
    corpus_dir: Path
    staging: Path
    train: list[Clip]
    data: DataParams
    params: AugmentParams

    def copy(self, clip: Clip, index: int, strength: float) -> Clip:
        entry, partner = plan_copy(clip, index, strength, self.train, self.data, self.params)
        target = self.staging / entry.path
        if target.is_file():  # written before a crash; planning again is cheap and gives the same entry
            frames = sf.info(target).frames
        else:
            audio = render_copy(entry, clip, partner, self.corpus_dir, self.data.sample_rate)
            write_audio(target, audio, self.data.sample_rate)
            frames = len(audio)
        return replace(entry, duration=frames / self.data.sample_rate)


def augment_corpus(corpus_dir: Path, out_dir: Path, data: DataParams, params: AugmentParams) -> list[Clip]:
    """Write augmented copies of the corpus's training clips to `out_dir` (manifest.jsonl and audio/),
    all at once or not at all; a killed run resumes where it stopped. Returns the manifest entries."""
    check_params(params)
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    train = _train_clips(corpus_dir)
    jobs = [(clip, index, strength) for clip in train for index, strength in enumerate(curriculum(params))]
    resume_key = _resume_key(corpus_dir, data, params)
    _drop_stale_staging(out_dir, resume_key)
    with atomic_directory(out_dir, resume_key=resume_key) as staging:
        audio_dir = staging / AUDIO_DIR
        audio_dir.mkdir(exist_ok=True)
        for partial in audio_dir.glob(".*.tmp"):  # a write the crash interrupted
            partial.unlink()
        run = _Run(corpus_dir, staging, train, data, params)
        written = [run.copy(*job) for job in tqdm(jobs, desc="augment", unit="copy")]
        write_manifest(staging, written)
    return written


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its data and augment sections.")] = paths.PARAMS,
    corpus: Annotated[Path, typer.Option(help="Corpus folder with manifest.jsonl and audio.")] = paths.CORPUS,
    out: Annotated[Path, typer.Option(help="Folder to write (replaced whole when done).")] = paths.AUGMENTED,
) -> None:
    """Write augmented copies of a corpus's training clips (time stretch, pitch shift, masks, noise,
    reverb, distortion, chorus, compression, polymix), with tempo, key and captions kept true."""
    try:
        data, augment = load_section(params, "data"), load_section(params, "augment")
        clips = augment_corpus(corpus, out, data, augment)
    except (ParamsError, ManifestError, AugmentError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    minutes = sum(clip.duration for clip in clips) / 60
    typer.echo(f"wrote {len(clips)} augmented clips ({minutes:.1f} min of audio) to {out}")


if __name__ == "__main__":
    app()
