"""Fine-tuning cost at facebook/musicgen-small's shapes: LoRA against full training of the decoder.

Random weights in musicgen-small's configuration (t5-base text encoder, 24x1024 decoder over 4 x 2048 codes;
model/musicgen_small.py); the step is the trainer's own: `components.training.objective.DecoderObjective` on
one clip's codes with its caption's text states, AdamW, and `components.training.adapters.apply_adapter` with
params.yaml's LoRA settings for the LoRA run. Each mode runs in its own process, so peak RSS is its own; the
modes alternate in one run, so machine noise hits both alike.

    python benchmarks/finetune.py --seconds 5 --steps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch

MODES = ("full", "lora")


def measure(mode: str, seconds: float, steps: int, checkpointing: bool) -> dict[str, float]:
    """Seconds per training step (median after a warm-up step), trainable parameters and peak RSS of one mode."""
    from transformers import MusicgenForConditionalGeneration

    from components.training.adapters import apply_adapter
    from components.training.objective import DecoderObjective
    from model.musicgen_small import musicgen_small_config
    from settings.params import TrainParams

    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(musicgen_small_config(micro=False))
    model.requires_grad_(False)  # as in training: the text encoder and the codec never train
    model.decoder.requires_grad_(True)
    model.enc_to_dec_proj.requires_grad_(True)
    params = replace(TrainParams(), adapter=mode, init_from="promoted", gradient_checkpointing=checkpointing)
    apply_adapter(model, params, keep_training=())
    if checkpointing:
        model.decoder.gradient_checkpointing_enable()
    objective = DecoderObjective(model).train()
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, betas=params.betas)

    frames = round(seconds * model.config.audio_encoder.frame_rate)
    codes = torch.randint(0, model.config.decoder.vocab_size, (1, model.config.decoder.num_codebooks, frames))
    text = torch.randn(1, 12, model.config.text_encoder.hidden_size)  # a 12-token caption's T5 states
    mask, keep = torch.ones(1, 12, dtype=torch.long), torch.ones(1, dtype=torch.bool)
    times = []
    for _ in range(steps + 1):  # the first step allocates the optimizer's state: not timed
        start = time.perf_counter()
        loss = objective(codes, text, mask, keep)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {
        "seconds_per_step": statistics.median(times[1:]),
        "trainable": sum(p.numel() for p in trainable),
        "decoder": sum(p.numel() for p in model.decoder.parameters()),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per training clip (batch 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode, after one warm-up step")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in both modes")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.seconds, args.steps, args.checkpointing)))
        return
    print(
        f"musicgen-small shapes, random weights; batch 1 x {args.seconds:g} s, median of {args.steps} steps, "
        f"{torch.get_num_threads()} torch threads, gradient checkpointing {'on' if args.checkpointing else 'off'}\n"
    )
    print("| mode | s per step | trainable parameters | trainable / decoder size | peak RSS GB |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODES:
        child = [sys.executable, __file__, "--mode", mode, "--seconds", str(args.seconds), "--steps", str(args.steps)]
        child += ["--checkpointing"] if args.checkpointing else []
        result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(
            f"| {mode} | {result['seconds_per_step']:.2f} | {result['trainable'] / 1e6:.1f} M | "
            f"{result['trainable'] / result['decoder']:.1%} | {result['peak_rss_gb']:.1f} |"
        )


if __name__ == "__main__":
    main()
