"""Stage `train_codec`: train the preset's EnCodec audio tokenizer on the corpus, or copy a pretrained one through.

    python -m components.train_codec --params params.yaml --corpus artifacts/data/corpus \
        --corpus artifacts/data/augmented --out artifacts/codec [--no-resume]

Training runs the SEANet encoder and decoder of transformers' `EncodecModel` around vector-quantize-pytorch's
`ResidualVQ` (components/codec/model.py) on random `codec.segment_seconds` crops of every corpus folder's
train clips. The codebooks are k-means-initialised on a larger sample of crops first, then follow the encoder
by EMA, with dead codes replaced. Losses: waveform L1, multi-scale log-mel L1, a fine-resolution log-spectrum
L1 and the commitment loss; with `codec.adversarial` (the default), a multi-scale STFT discriminator's hinge
and feature-matching losses join after `codec.adversarial_start` steps.

Why the discriminator is on by default: trained on the spectral losses alone, the tiny codec's decoder
settles on one waveform repeated every frame, a buzz on the 50 Hz frame rate's harmonics that fills the
mel bands on average (94% of its output after 750 steps, `frame_template_share` in metrics.json): it then
carries no pitch, and no language model over its tokens can follow a key. Measured on a GPU (48 clips,
batch 8): after 1000 / 2000 steps the template was 88% / 89% of the output with the spectral losses, 68% /
50% with the spectrum loss added, 14% / 2% with the discriminator as well.

A killed run resumes: every `codec.checkpoint_every` steps the whole training state (weights, codebooks and
their EMA buffers, optimizers, random streams, crop sampler, loss history, baselines) is written atomically
beside the output (components/codec/checkpoint.py), and a rerun with the same parameters and data continues
from it, k-means not redone, to the same weights as a run that never stopped; `--no-resume` starts over.

The output folder appears whole or not at all: an `EncodecModel` (config.json, model.safetensors) with its
trained codebooks, an `EncodecFeatureExtractor` (preprocessor_config.json) and metrics.json. The metrics
(SI-SNR, SNR, log-mel distance; components/codec/metrics.py) are measured through the saved model on the
first folder's valid clips, beside two baselines: silence, and this codec before its first step (random
networks, k-means codebooks), so the numbers say what training bought.

With `codec.pretrained` (a directory in facebook/encodec_32khz's layout) nothing is trained: the checkpoint is
checked, copied through and measured the same way.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

from components.codec import CodecError
from components.codec.checkpoint import LAST, CodecCheckpoints, restore_rng, resume_key, rng_states
from components.codec.data import CropSampler, training_files, validation_audio
from components.codec.metrics import Scorer
from components.codec.model import TrainableCodec
from components.codec.training import CodecTrainer, train
from components.corpus.manifest import ManifestError
from model.atomic_io import atomic_directory
from model.build import codec_config
from model.presets import Preset, get_preset
from settings import paths
from settings.params import CodecParams, DataParams, ParamsError, load_section

METRICS_FILE = "metrics.json"
# k-means wants several vectors per code, far more than one batch has: initialise on this many frames per code.
KMEANS_FRAMES_PER_CODE = 4
# A code is dead (and replaced by a recent encoder output) when its EMA usage falls below this share of an even
# split of one batch's frames: with 1024 codes and 400 frames a batch, EnCodec's fixed threshold of 2 would
# replace almost every code at every step.
DEAD_CODE_SHARE = 0.5
FINAL_LOSS_STEPS = 50  # final_losses averages the last this many steps: one step's losses are noise

log = logging.getLogger(__name__)


@dataclass
class CodecReport:
    out_dir: Path
    metrics: dict[str, Any]  # what metrics.json holds
    history: list[dict[str, float]] = field(default_factory=list)  # each training step's losses


def _preset(params: CodecParams, preset: Preset | None) -> Preset:
    try:
        return preset or get_preset(params.preset)
    except ValueError as error:
        raise ParamsError(f"codec.preset: {error}") from None


def _new_codec(config: EncodecConfig, params: CodecParams, segment: int) -> TrainableCodec:
    """A codec with random networks and codebooks still waiting for their k-means."""
    frames_per_crop = math.ceil(segment / config.hop_length)
    threshold = DEAD_CODE_SHARE * params.batch_size * frames_per_crop / config.codebook_size
    return TrainableCodec(config, dead_code_threshold=threshold)


def _initial_codec(
    config: EncodecConfig, sampler: CropSampler, params: CodecParams, segment: int
) -> tuple[TrainableCodec, float]:
    """A codec with random networks and k-means codebooks, and the seconds the k-means took."""
    codec = _new_codec(config, params, segment)
    frames_per_crop = math.ceil(segment / config.hop_length)
    crops = max(params.batch_size, math.ceil(KMEANS_FRAMES_PER_CODE * config.codebook_size / frames_per_crop))
    start = time.perf_counter()
    codec.init_codebooks(
        sampler.batch(min(params.batch_size, crops - done)) for done in range(0, crops, params.batch_size)
    )
    return codec, time.perf_counter() - start


def _feature_extractor(config: EncodecConfig) -> EncodecFeatureExtractor:
    return EncodecFeatureExtractor(
        feature_size=config.audio_channels, sampling_rate=config.sampling_rate, padding_value=0.0
    )


def _load(directory: Path) -> EncodecModel:
    try:
        model, info = EncodecModel.from_pretrained(directory, output_loading_info=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CodecError(f"cannot load the EnCodec checkpoint in {directory}: {error}") from None
    if info["missing_keys"] or info["mismatched_keys"]:
        broken = sorted(info["missing_keys"]) + sorted(str(key) for key in info["mismatched_keys"])
        raise CodecError(f"EnCodec checkpoint in {directory} lacks or mis-shapes weights: {', '.join(broken[:5])}")
    return model.eval()


def _pretrained_config(directory: Path, sample_rate: int) -> EncodecConfig:
    """The config of a facebook/encodec_32khz-style directory, or CodecError saying why it is not one."""
    if not directory.is_dir():
        raise CodecError(f"codec.pretrained {directory} is not a directory")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CodecError(f"codec.pretrained {directory} has no config.json: not an EnCodec checkpoint directory")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CodecError(f"{config_file} is not valid JSON: {error}") from None
    if raw.get("model_type") != "encodec":
        raise CodecError(f"codec.pretrained {directory} holds a {raw.get('model_type')!r} model, not an EnCodec")
    config = EncodecConfig.from_dict(raw)
    if config.sampling_rate != sample_rate or config.audio_channels != 1:
        raise CodecError(
            f"codec.pretrained {directory} is a {config.audio_channels}-channel {config.sampling_rate} Hz codec; "
            f"the corpus is mono at data.sample_rate {sample_rate} Hz"
        )
    if not any((directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise CodecError(f"codec.pretrained {directory} has no model.safetensors or pytorch_model.bin")
    return config


def _describe(config: EncodecConfig) -> dict[str, Any]:
    return {
        "codebooks": config.num_quantizers,
        "codebook_size": config.codebook_size,
        "frame_rate": config.frame_rate,
        "sample_rate": config.sampling_rate,
    }


def _final_losses(history: list[dict[str, float]]) -> dict[str, float]:
    tail = history[-FINAL_LOSS_STEPS:]
    return {name: float(np.mean([row[name] for row in tail if name in row])) for name in tail[-1]} if tail else {}


def _write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")


def _save_and_measure(model: EncodecModel, staging: Path, scorer: Scorer, facts: dict[str, Any]) -> dict[str, Any]:
    model.save_pretrained(staging)
    _feature_extractor(model.config).save_pretrained(staging)
    metrics = {**scorer.codec(_load(staging)), **facts}
    _write_metrics(staging, metrics)
    return metrics


def _facts(scorer: Scorer, codec: TrainableCodec, config: EncodecConfig) -> dict[str, Any]:
    """Baselines and the codec's shape: measured before the first step, kept in checkpoints."""
    baselines = {"silence": scorer.silence(), "untrained": scorer.codec(copy.deepcopy(codec).to_encodec())}
    return {"baselines": baselines, "valid_clips": len(scorer.clips), **_describe(config)}


def train_codec(
    corpus_dirs: list[Path],
    out_dir: Path,
    data: DataParams,
    params: CodecParams,
    preset: Preset | None = None,
    show_progress: bool = True,
    resume: bool = True,
) -> CodecReport:
    """Train the codec of `preset` (default: `params.preset`'s) on the corpora's train clips, or copy
    `params.pretrained` through, and write it with its metrics to `out_dir`, all at once or not at all.

    Training checkpoints every `params.checkpoint_every` steps (components/codec/checkpoint.py); with `resume`
    a checkpoint of exactly these parameters and data is continued, to the same weights as an unbroken run."""
    params.check()
    corpus_dirs, out_dir = [Path(folder) for folder in corpus_dirs], Path(out_dir)
    if not corpus_dirs:
        raise CodecError("no corpus folder given")
    scorer = Scorer(validation_audio(corpus_dirs[0], params.valid_clips, data.sample_rate), data.sample_rate)
    segment = round(params.segment_seconds * data.sample_rate)
    sampler = CropSampler(training_files(corpus_dirs, data.sample_rate), segment, params.seed)
    if params.pretrained is not None:
        config = _pretrained_config(Path(params.pretrained), data.sample_rate)
    else:
        config = codec_config(_preset(params, preset))
        if config.sampling_rate != data.sample_rate:
            raise ParamsError(
                f"codec.preset {params.preset!r} is a {config.sampling_rate} Hz codec but data.sample_rate is "
                f"{data.sample_rate}"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        if params.pretrained is not None:
            codec, _ = _initial_codec(config, sampler, params, segment)
            return _copy_pretrained(Path(params.pretrained), out_dir, scorer, _facts(scorer, codec, config))
        checkpoints = CodecCheckpoints(out_dir, resume_key(corpus_dirs, sampler.files, data, params, config))
        checkpoints.drop_stale()
        saved = checkpoints.load() if resume else None
        if saved is None:
            checkpoints.remove()  # --no-resume: this run's checkpoints replace the old ones
            codec, kmeans_seconds = _initial_codec(config, sampler, params, segment)
            facts, trained_seconds = _facts(scorer, codec, config), 0.0
            trainer = CodecTrainer(codec, params, data.sample_rate)
        else:
            # The k-means is not redone: the codebooks, and the flag saying they are initialised, are restored.
            trainer = CodecTrainer(_new_codec(config, params, segment), params, data.sample_rate)
            trainer.restore(saved["trainer"])
            restore_rng(saved["rng"], sampler.rng)  # last: building the discriminator above drew from torch's
            facts, kmeans_seconds, trained_seconds = saved["facts"], saved["kmeans_seconds"], saved["train_seconds"]
            log.info(
                "resuming the codec from step %d of %d (checkpoint %s; --no-resume starts over)",
                trainer.step,
                params.steps,
                checkpoints.folder / LAST,
            )
        start = time.perf_counter()

        def checkpoint() -> None:
            seconds = trained_seconds + time.perf_counter() - start
            state = {
                "trainer": trainer.state(),
                "rng": rng_states(sampler.rng),
                "facts": facts,
                "kmeans_seconds": kmeans_seconds,
                "train_seconds": seconds,
            }
            checkpoints.save(state, {"step": trainer.step, "steps": params.steps, "train_seconds": seconds})

        train(trainer, sampler.batches(params.batch_size), show_progress, checkpoint)
        seconds = trained_seconds + time.perf_counter() - start
    facts = facts | {
        "pretrained": None,
        "steps": params.steps,
        "train_seconds": round(seconds, 2),  # the steps kept: those a killed run lost since its checkpoint not
        "seconds_per_step": round(seconds / params.steps, 4),
        "kmeans_init_seconds": round(kmeans_seconds, 2),
        "final_losses": _final_losses(trainer.history),
    }
    with atomic_directory(out_dir) as staging:
        metrics = _save_and_measure(trainer.codec.to_encodec(), staging, scorer, facts)
    checkpoints.remove()  # published: nothing left to resume
    return CodecReport(out_dir, metrics, trainer.history)


def _copy_pretrained(source: Path, out_dir: Path, scorer: Scorer, facts: dict[str, Any]) -> CodecReport:
    with atomic_directory(out_dir) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        model = _load(staging)
        if not (staging / "preprocessor_config.json").is_file():
            _feature_extractor(model.config).save_pretrained(staging)
        metrics = {**scorer.codec(model), **facts, "pretrained": str(source), "steps": 0}
        _write_metrics(staging, metrics)
    return CodecReport(out_dir, metrics)


def _db(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f} dB"


def _summary(metrics: dict[str, Any], out: Path) -> str:
    untrained, silence = metrics["baselines"]["untrained"], metrics["baselines"]["silence"]
    return (
        f"codec in {out}: SI-SNR {_db(metrics['si_snr_db'])} (untrained {_db(untrained['si_snr_db'])}), "
        f"log-mel distance {metrics['mel_distance']:.3f} (untrained {untrained['mel_distance']:.3f}, "
        f"silence {silence['mel_distance']:.3f}) on {metrics['valid_clips']} held-out clip(s); "
        f"frame-rate template {metrics['frame_template_share']:.0%} of the decoded audio "
        f"(untrained {untrained['frame_template_share']:.0%})"
    )


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its data and codec sections.")] = paths.PARAMS,
    corpus: Annotated[
        list[Path] | None,
        typer.Option(
            help="A corpus folder (manifest.jsonl and audio). Repeat it to add folders, e.g. the augmented "
            "copies: training crops come from every folder's train clips, the metrics from the first folder's "
            "valid clips. Default: artifacts/data/corpus.",
            metavar="<path>",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for the codec and metrics.json (replaced whole when done).")
    ] = paths.CODEC,
    no_resume: Annotated[
        bool,
        typer.Option(
            "--no-resume",
            help="Start over, even where a killed run with the same parameters and data left a checkpoint "
            "(beside --out) that the stage would otherwise continue from.",
        ),
    ] = False,
) -> None:
    """Train the preset's EnCodec audio tokenizer on the corpus (or copy codec.pretrained through) and
    measure it on held-out clips: SI-SNR and log-mel distance, beside silence and the untrained codec."""
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)  # this stage's own lines (a resume), not every library's
    try:
        data, codec = load_section(params, "data"), load_section(params, "codec")
        report = train_codec(corpus or [paths.CORPUS], out, data, codec, resume=not no_resume)
    except (ParamsError, ManifestError, CodecError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(_summary(report.metrics, out))


if __name__ == "__main__":
    app()
