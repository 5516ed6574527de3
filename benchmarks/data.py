"""Data-stage throughput: seconds of audio rendered, and augmented, per wall second.

Renders `--clips` clips of `--seconds` (compose + render + FLAC write, the prepare stage's work), then
augments them once with the default `augment` parameters and once at full strength with every
transform on. One process, as the stages run.

    python benchmarks/data.py --clips 40 --seconds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from components.augment import augment_corpus
from components.prepare import prepare
from settings.params import AugmentParams, DataParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    data = DataParams(count=args.clips, clip_seconds=args.seconds, splits={"train": 1.0, "valid": 0.0, "test": 0.0})
    default = AugmentParams()
    strongest = replace(
        default,
        strength_start=1.0,
        strength_end=1.0,
        polymix=0.0,
        probabilities={name: 1.0 for name in default.probabilities},
    )
    audio_seconds = args.clips * args.seconds
    print(f"{args.clips} clips of {args.seconds:g} s at {data.sample_rate} Hz\n")
    print("| stage | wall s | audio s per wall s |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        started = time.perf_counter()
        prepare(data, corpus, show_progress=False)
        wall = time.perf_counter() - started
        print(f"| render (compose, synthesise, write FLAC) | {wall:.1f} | {audio_seconds / wall:.0f} |")
        runs = (("augment, default params", default), ("augment, every transform at strength 1", strongest))
        for name, params in runs:
            started = time.perf_counter()
            clips = augment_corpus(corpus, Path(tmp) / name.replace(" ", "_"), data, params)
            wall = time.perf_counter() - started
            seconds = sum(clip.duration for clip in clips)
            print(f"| {name} | {wall:.1f} | {seconds / wall:.0f} |")


if __name__ == "__main__":
    main()
