"""Generation speed of a preset: musicops' generator beside plain transformers on the same weights.

Measures the real-time factor (seconds of audio per wall second, per stream and for the whole batch)
and decoding steps per second, with classifier-free guidance and top-k sampling, at each batch size;
"musicops bf16" runs the decoder's weights in bfloat16 (`MusicGenerator(dtype=torch.bfloat16)`).
The two implementations alternate within one run, so machine noise hits both alike; the median of
`--repeats` runs is reported. Also the streaming first-chunk latency at batch 1.

    python benchmarks/generate.py --preset tiny --duration 5 --batch 1 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model import GenerationParams, MusicGenerator


def _time(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio per request")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (repeatable); default 1 and 8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batch or [1, 8]

    generator = MusicGenerator.load(args.preset)
    generator_bf16 = MusicGenerator.load(args.preset, dtype=torch.bfloat16)  # same seeded weights
    model, tokenizer = generator.model, generator.processor.tokenizer
    params = GenerationParams(duration=args.duration, seed=0)  # MusicGen's sampling defaults, as transformers' below
    frames = generator.frames_for(args.duration)
    steps = frames + generator.num_codebooks - 1  # decoding steps under the delay pattern
    prompt = "a laid-back jazz tune at 92 BPM with saxophone, walking bass and brushed drums"

    def ours(batch: int) -> None:
        generator.generate([prompt] * batch, params)

    def ours_bf16(batch: int) -> None:
        generator_bf16.generate([prompt] * batch, params)

    def plain(batch: int) -> None:
        inputs = tokenizer([prompt] * batch, padding=True, return_tensors="pt", return_token_type_ids=False)
        with torch.inference_mode():
            model.generate(
                **inputs,
                do_sample=True,
                top_k=params.top_k,
                guidance_scale=params.guidance_scale,
                max_new_tokens=steps,
            )

    ours(1), ours_bf16(1), plain(1)  # warm-up: first calls allocate and load kernels
    print(
        f"preset {args.preset}, {args.duration:g} s per request, guidance {params.guidance_scale:g}, "
        f"top-k {params.top_k}, "
        f"{torch.get_num_threads()} torch threads, median of {args.repeats}\n"
    )
    print("| batch | implementation | wall s | RTF per stream | RTF batch | steps/s | speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch in batches:
        runners = {"musicops": ours, "musicops bf16": ours_bf16, "transformers": plain}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                times[name].append(_time(lambda run=run, b=batch: run(b)))
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, wall in medians.items():
            speedup = medians["transformers"] / wall
            print(
                f"| {batch} | {name} | {wall:.2f} | {args.duration / wall:.1f}x | "
                f"{batch * args.duration / wall:.1f}x | {steps / wall:.0f} | {speedup:.2f} |"
            )

    latencies = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        stream = generator.stream([prompt], params)
        next(stream)
        latencies.append(time.perf_counter() - started)
        stream.close()
    print(f"\nstreaming, batch 1: first chunk after {statistics.median(latencies) * 1000:.0f} ms (median)")


if __name__ == "__main__":
    main()
