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
checked, copied through and measured the same way. Nor with a `train.init_from` other than scratch: the language
model then starts from a model that brings its own codec (components/training/start.py refuses tokens of any other),
so the stage writes that model's audio encoder and feature extractor here, measured the same way, and tokenize
encodes the corpus with it. Both at once name two codecs for one pipeline, and are refused.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
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
from components.training.start import start_directory
from model.atomic_io import atomic_directory
from model.build import codec_config
from model.checkpoint import load_model
from model.errors import ModelInputError
from model.presets import Preset, get_preset
from settings import paths
from settings.params import INIT_SCRATCH, CodecParams, DataParams, ParamsError, load_section

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


def check_codec_source(params: CodecParams, init_from: str) -> None:
    """ParamsError when codec.pretrained and a starting model (train.init_from) both name the codec."""
    if params.pretrained is not None and init_from != INIT_SCRATCH:
        raise ParamsError(
            f"codec.pretrained is {params.pretrained!r} but train.init_from is {init_from!r}, which brings its own "
            "codec (the language model only reads tokens of its own codec): unset codec.pretrained, or set "
            f"train.init_from to {INIT_SCRATCH}"
        )


def _check_rate(config: EncodecConfig, sample_rate: int, what: str) -> None:
    # The scorer compares the codec's output with the corpus's clips sample for sample: one rate for both.
    if config.sampling_rate != sample_rate or config.audio_channels != 1:
        raise CodecError(
            f"{what} is a {config.audio_channels}-channel {config.sampling_rate} Hz codec; "
            f"the corpus is mono at data.sample_rate {sample_rate} Hz"
        )


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
    _check_rate(config, sample_rate, f"codec.pretrained {directory}")
    if not any((directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        raise CodecError(f"codec.pretrained {directory} has no model.safetensors or pytorch_model.bin")
    return config


def _model_codec(directory: Path, sample_rate: int) -> tuple[EncodecModel, EncodecFeatureExtractor]:
    """The audio encoder and feature extractor of the model directory `directory` (ours or musicgen-small's).

    Loaded through model.checkpoint.load_model, as training loads the same directory: the codec written here is
    then exactly the one the starting model decodes with. That reads the whole model (for musicgen-small about
    2 GB with its T5 encoder, seconds), and everything but the codec is let go at once."""
    try:
        model, processor, _ = load_model(directory)
    except ModelInputError as error:
        raise CodecError(f"train.init_from: {error}") from None
    codec = model.audio_encoder.eval()
    _check_rate(codec.config, sample_rate, f"the codec of the starting model {directory}")
    return codec, processor.feature_extractor


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
    init_from: str = INIT_SCRATCH,
) -> CodecReport:
    """Train the codec of `preset` (default: `params.preset`'s) on the corpora's train clips, copy
    `params.pretrained` through, or (`init_from`, train.init_from, not scratch) write the starting model's own
    codec; in each case with its metrics to `out_dir`, all at once or not at all.

    Training checkpoints every `params.checkpoint_every` steps (components/codec/checkpoint.py); with `resume`
    a checkpoint of exactly these parameters and data is continued, to the same weights as an unbroken run."""
    params.check()
    check_codec_source(params, init_from)
    start = start_directory(init_from)
    corpus_dirs, out_dir = [Path(folder) for folder in corpus_dirs], Path(out_dir)
    if not corpus_dirs:
        raise CodecError("no corpus folder given")
    scorer = Scorer(validation_audio(corpus_dirs[0], params.valid_clips, data.sample_rate), data.sample_rate)
    segment = round(params.segment_seconds * data.sample_rate)
    sampler = CropSampler(training_files(corpus_dirs, data.sample_rate), segment, params.seed)
    if start is not None:
        model_codec, extractor = _model_codec(start, data.sample_rate)
        # A plain copy: load_model sets SDPA attention on the sub-configs, with which no EncodecModel (the
        # untrained baseline below) can be built.
        config = EncodecConfig.from_dict(model_codec.config.to_dict())
    elif params.pretrained is not None:
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
        if start is not None or params.pretrained is not None:
            # The untrained baseline of the same architecture still says what the codec's training bought.
            codec, _ = _initial_codec(config, sampler, params, segment)
            facts = _facts(scorer, codec, config)
            if start is not None:
                facts |= {"pretrained": None, "start_model": str(start)}
                return _pass_through(
                    out_dir, scorer, facts, lambda staging: _save_codec(model_codec, extractor, staging)
                )
            source = Path(params.pretrained)
            facts |= {"pretrained": str(source), "start_model": None}
            return _pass_through(out_dir, scorer, facts, lambda staging: _copy_tree(source, staging))
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
        "start_model": None,
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


def _copy_tree(source: Path, staging: Path) -> None:
    shutil.copytree(source, staging, dirs_exist_ok=True)


def _save_codec(codec: EncodecModel, extractor: EncodecFeatureExtractor, staging: Path) -> None:
    codec.save_pretrained(staging)
    extractor.save_pretrained(staging)


def _pass_through(out_dir: Path, scorer: Scorer, facts: dict[str, Any], write: Callable[[Path], None]) -> CodecReport:
    """Publish a codec trained elsewhere (`write` puts it in the staging folder): loaded back from the staging
    folder, as tokenize will load it, and measured like a trained one."""
    with atomic_directory(out_dir) as staging:
        write(staging)
        model = _load(staging)
        if not (staging / "preprocessor_config.json").is_file():
            _feature_extractor(model.config).save_pretrained(staging)
        metrics = {**scorer.codec(model), **facts, "steps": 0}
        _write_metrics(staging, metrics)
    return CodecReport(out_dir, metrics)


def _db(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f} dB"


def _summary(metrics: dict[str, Any], out: Path) -> str:
    untrained, silence = metrics["baselines"]["untrained"], metrics["baselines"]["silence"]
    if metrics.get("start_model"):
        origin = f"the codec of the starting model {metrics['start_model']} (train.init_from), not trained, "
    elif metrics.get("pretrained"):
        origin = f"codec.pretrained {metrics['pretrained']}, not trained, "
    else:
        origin = ""
    return (
        f"{origin}codec in {out}: SI-SNR {_db(metrics['si_snr_db'])} (untrained {_db(untrained['si_snr_db'])}), "
        f"log-mel distance {metrics['mel_distance']:.3f} (untrained {untrained['mel_distance']:.3f}, "
        f"silence {silence['mel_distance']:.3f}) on {metrics['valid_clips']} held-out clip(s); "
        f"frame-rate template {metrics['frame_template_share']:.0%} of the decoded audio "
        f"(untrained {untrained['frame_template_share']:.0%})"
    )


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[
        Path, typer.Option(help="params.yaml: reads its data and codec sections and train.init_from.")
    ] = paths.PARAMS,
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
    """Train the preset's EnCodec audio tokenizer on the corpus (or copy codec.pretrained through, or write the
    codec of the model train.init_from starts from) and measure it on held-out clips: SI-SNR and log-mel
    distance, beside silence and the untrained codec."""
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)  # this stage's own lines (a resume), not every library's
    try:
        data, codec, start = load_section(params, "data"), load_section(params, "codec"), load_section(params, "train")
        report = train_codec(
            corpus or [paths.CORPUS], out, data, codec, resume=not no_resume, init_from=start.init_from
        )
    except (ParamsError, ManifestError, CodecError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(_summary(report.metrics, out))


if __name__ == "__main__":
    app()
