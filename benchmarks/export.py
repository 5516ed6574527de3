"""Torch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8, side by side in one run.

Three measurements, each at every batch size, with classifier-free guidance (so the decoder sees 2 x batch
rows): the decoder's per-step latency (KV-cached single step, after a text prefill), the codec decoder's
time for the whole clip's codes, and the end-to-end real-time factor of `generate` (text encoder,
decoding loop with top-k sampling, codec decoder). The backends alternate within each repeat, so machine
noise hits all alike; medians are reported.

    python benchmarks/export.py --model artifacts/model --onnx artifacts/onnx --batch 1 --batch 8

Without --onnx the model is exported to a temporary folder first (fp32 and int8/, about 40 s for tiny).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from model import GenerationParams, MusicGenerator, OnnxMusicGenerator
from settings import paths

PROMPT = "a laid-back jazz tune at 92 BPM with saxophone, walking bass and brushed drums"
GUIDANCE = GenerationParams.guidance_scale  # every measurement runs the guided rows generation runs


def step_latency(generator, batch: int, steps: int) -> float:
    """Median seconds per cached decoder step over `steps` steps at `batch` prompts with guidance."""
    text = generator.encode_text([PROMPT] * batch)
    states, mask = text.rows(GUIDANCE)
    decoder = generator.decoder
    rows, codebooks = states.shape[0], generator.num_codebooks
    # The prompt's tempo too: a model with a beat grid adds it at every step, as generation does.
    decoder.start(states, mask, capacity=steps + 1, tempi=text.row_tempi(GUIDANCE))
    tokens = torch.randint(0, 1024, (rows, codebooks, 1), generator=torch.Generator().manual_seed(0))
    decoder.step(tokens)  # the prefill (first position) is not a cached step
    times = []
    with torch.inference_mode():
        for _ in range(steps - 1):
            started = time.perf_counter()
            decoder.step(tokens)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def codec_seconds(generator, batch: int, frames: int) -> float:
    """Seconds the codec decoder takes for `frames` frames of random codes for each of `batch` clips."""
    codes = torch.randint(0, 1024, (batch, generator.num_codebooks, frames), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    with torch.inference_mode():
        generator.decode_audio(codes)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=paths.MODEL, help="a trained model directory")
    parser.add_argument("--onnx", type=Path, default=None, help="its export (with int8/); default: export now")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio per request")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (repeatable); default 1 and 8")
    parser.add_argument("--steps", type=int, default=200, help="decoder steps timed per latency measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batches = args.batch or [1, 8]

    onnx_dir = args.onnx
    if onnx_dir is None:
        from components.export import export
        from settings.params import ExportParams

        onnx_dir = Path(tempfile.mkdtemp(prefix="musicops-bench-")) / "onnx"
        export(args.model, onnx_dir, ExportParams(int8=True))
    backends = {
        "torch eager": MusicGenerator.load(args.model),
        "onnxruntime fp32": OnnxMusicGenerator.load(onnx_dir),
        "onnxruntime int8": OnnxMusicGenerator.load(onnx_dir / "int8"),
    }
    params = GenerationParams(duration=args.duration, seed=0)  # MusicGen's sampling defaults
    for generator in backends.values():  # warm-up: first calls allocate and load kernels
        generator.generate([PROMPT], GenerationParams(duration=0.5, seed=0))

    print(
        f"model {args.model}, {args.duration:g} s per request, guidance {GUIDANCE:g}, top-k {params.top_k}, "
        f"{torch.get_num_threads()} torch threads, median of {args.repeats}"
    )
    for name in ("onnxruntime fp32", "onnxruntime int8"):  # model/thread_calibration.py chose these at load
        session = next(iter(backends[name].runner.sessions.values()))
        print(f"{name}: {session.get_session_options().intra_op_num_threads} intra-op threads (calibrated)")
    print()
    print(
        "| batch | backend | decoder step ms | codec decode s | wall s | RTF per stream | RTF batch "
        "| speed-up vs torch |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    frames = backends["torch eager"].frames_for(args.duration)
    for batch in batches:
        latency: dict[str, list[float]] = {name: [] for name in backends}
        codec: dict[str, list[float]] = {name: [] for name in backends}
        wall: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(args.repeats):
            for name, generator in backends.items():
                latency[name].append(step_latency(generator, batch, args.steps))
                codec[name].append(codec_seconds(generator, batch, frames))
                started = time.perf_counter()
                generator.generate([PROMPT] * batch, params)
                wall[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) for name, values in wall.items()}
        for name in backends:
            seconds = medians[name]
            print(
                f"| {batch} | {name} | {statistics.median(latency[name]) * 1000:.2f} | "
                f"{statistics.median(codec[name]):.2f} | {seconds:.2f} | "
                f"{args.duration / seconds:.1f}x | {batch * args.duration / seconds:.1f}x | "
                f"{medians['torch eager'] / seconds:.2f} |"
            )


if __name__ == "__main__":
    main()
