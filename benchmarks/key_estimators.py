"""Key estimators against the rendered corpus's true keys: chroma profile vs basic-pitch's transcribed notes.

Renders `--clips` clips of the default corpus (every genre taking turns, `--seconds` each, seed `--seed`) as the
prepare stage does, reads them back from their FLAC files, and estimates each clip's key from its mean chroma
(`model.music_features.estimate_key`, what evaluation and monitoring use) and from the notes basic-pitch
transcribes (`model.transcription`), matched with Krumhansl & Kessler's profiles (its default) and, to show why,
with the chroma estimator's Albrecht & Shanahan profiles. Each is scored against the clip's label: exact key
accuracy and the mean MIREX weighted score (mir_eval; chance is about 0.08), with how the misses relate to the
true key, and seconds per clip (the notes' rows share one transcription).

    python benchmarks/key_estimators.py --clips 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from components.corpus.rendered import render_corpus
from model import music_features, transcription
from model.audio import read_audio
from settings.params import DataParams

# What a MIREX score says about a miss (model.music_features.key_score).
RELATION = {1.0: "exact", 0.5: "fifth", 0.3: "relative", 0.2: "parallel", 0.0: "other"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = DataParams(count=args.clips, clip_seconds=args.seconds, seed=args.seed)
    from_notes = {
        "notes, Krumhansl-Kessler": music_features.KRUMHANSL_KESSLER,
        "notes, Albrecht-Shanahan": music_features.ALBRECHT_SHANAHAN,
    }
    scores: dict[str, list[float]] = defaultdict(list)
    exact_by_genre: dict[str, Counter[str]] = defaultdict(Counter)  # and "clips": how many of the genre
    seconds: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        clips = render_corpus(data, Path(tmp))
        transcription.transcribe(read_audio(Path(tmp) / clips[0].path, data.sample_rate), data.sample_rate)  # warm-up
        for clip in clips:
            audio = read_audio(Path(tmp) / clip.path, data.sample_rate)
            true = (int(clip.labels["root"]), str(clip.labels["mode"]))
            started = time.perf_counter()
            estimates = {"chroma, Albrecht-Shanahan": music_features.estimate_key(audio, data.sample_rate)}
            seconds["chroma, Albrecht-Shanahan"] += time.perf_counter() - started
            started = time.perf_counter()
            notes = transcription.transcribe(audio, data.sample_rate)
            for name, profiles in from_notes.items():
                estimates[name] = transcription.key_from_notes(notes, profiles)
                seconds[name] += time.perf_counter() - started
            exact_by_genre[clip.labels["genre"]]["clips"] += 1
            for name, estimated in estimates.items():
                score = music_features.key_score(estimated, true) if estimated is not None else 0.0
                scores[name].append(score)
                exact_by_genre[clip.labels["genre"]][name] += score == 1.0
    genres = sorted(exact_by_genre)
    print(f"{len(clips)} clips of {args.seconds:g} s ({len(genres)} genres), seed {args.seed}\n")
    misses_by = "misses: fifth above / relative / parallel / other"
    print(f"| estimator | exact key | mean MIREX score | {misses_by} | s per clip |")
    print("|---|---:|---:|---|---:|")
    for name, values in scores.items():
        relations = Counter(RELATION[value] for value in values)
        misses = " / ".join(str(relations[kind]) for kind in ("fifth", "relative", "parallel", "other"))
        exact, mean = relations["exact"] / len(values), sum(values) / len(values)
        print(f"| {name} | {exact:.2f} | {mean:.3f} | {misses} | {seconds[name] / len(values):.2f} |")
    print("\nexact keys per genre (" + " | ".join(scores) + "):")
    for genre in genres:
        counts = exact_by_genre[genre]
        print(f"  {genre}: " + " | ".join(str(counts[name]) for name in scores) + f" of {counts['clips']}")


if __name__ == "__main__":
    main()
