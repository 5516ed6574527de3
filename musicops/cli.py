"""`musicops`: generate music, inspect models, run the demo. Heavy imports wait until a command runs,
so `musicops --help` answers at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from model.generation_params import GenerationParams, draw_seed
from monitoring.cli import app as monitor_app
from musicops.base_cli import app as base_app
from musicops.data_cli import app as data_app
from pipelines.cli import app as pipeline_app
from settings import paths
from settings.params import ServeSettings

app = typer.Typer(
    help="musicops: train, measure, serve and watch MusicGen-style text-to-music models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(monitor_app, name="monitor")
app.add_typer(base_app, name="base")
app.add_typer(data_app, name="data")

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A model directory (ours or facebook/musicgen-small's layout) or a preset name "
        "(tiny, small, medium: random weights, for trying the machinery). Default: the promoted model, else the "
        "last trained one (artifacts/model), else the base model (models/base).",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line naming the problem and return the exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@app.command()
def generate(
    prompt: Annotated[
        str, typer.Argument(help='What to play, e.g. "upbeat jazz with saxophone"; "" for unconditional.')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="WAV file to write.")] = Path("musicops.wav"),
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds of audio.")] = GenerationParams.duration,
    model: ModelOption = None,
    seed: Annotated[
        int | None, typer.Option(help="Same seed, same audio. Default: drawn at random and printed.")
    ] = None,
    guidance: Annotated[
        float, typer.Option(help="Classifier-free guidance scale; 1 turns it off.")
    ] = GenerationParams.guidance_scale,
    top_k: Annotated[
        int, typer.Option(help="Sample among the k likeliest codes; 0 turns it off.")
    ] = GenerationParams.top_k,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass; 0 turns it off.")] = GenerationParams.top_p,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature; 0 decodes greedily.")
    ] = GenerationParams.temperature,
    beams: Annotated[int, typer.Option(help="Beam search width; 1 samples.")] = GenerationParams.num_beams,
    stream: Annotated[bool, typer.Option("--stream", help="Write audio chunks as they are produced.")] = False,
    continue_from: Annotated[
        Path | None,
        typer.Option("--continue", help="Continue this audio file instead of starting from silence."),
    ] = None,
    normalize: Annotated[float | None, typer.Option(help="Normalise loudness to this many LUFS (e.g. -14).")] = None,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="Run the decoder in bfloat16: faster on CPU, results differ slightly.")
    ] = False,
) -> None:
    """Generate music from a text prompt and write it as a WAV file."""
    from model import ModelInputError

    params = GenerationParams(
        duration=duration,
        guidance_scale=guidance,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        num_beams=beams,
    )
    from serving.local import default_model

    try:
        _generate(prompt, out, model or default_model(), params, stream, continue_from, normalize, bf16)
    except ModelInputError as error:
        raise fail(str(error)) from None


def _generate(prompt, out, model_source, params, stream, continue_from, normalize, bf16) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from model import MusicGenerator
    from model.audio import check_writable, normalize_loudness, read_audio, write_audio

    check_writable(out)
    params.check(max_duration=float("inf"))  # what needs no model fails before the model loads
    if stream and continue_from is not None:
        raise fail("--stream and --continue do not combine yet")
    generator = MusicGenerator.load(model_source, dtype=torch.bfloat16 if bf16 else torch.float32)
    params.check(generator.card.max_duration_seconds)
    if params.seed is None:  # fix it now so it can be printed and the run repeated
        params = GenerationParams(**{**params.__dict__, "seed": draw_seed()})
    bar = tqdm(total=generator.frames_for(params.duration), unit="frame", desc="generating", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    started = time.perf_counter()
    first_chunk = None
    if stream:
        chunks = []
        for chunk in generator.stream([prompt], params, progress=progress):
            first_chunk = first_chunk or time.perf_counter() - started
            chunks.append(chunk[0])
        audio = np.concatenate(chunks)
    else:
        prompt_audio = None
        if continue_from is not None:
            prompt_audio = read_audio(continue_from, generator.sample_rate)[None]
        audio = generator.generate([prompt], params, audio_prompt=prompt_audio, progress=progress).audio[0]
    elapsed = time.perf_counter() - started
    bar.close()
    if normalize is not None:
        audio = normalize_loudness(audio, generator.sample_rate, normalize)
    write_audio(out, audio, generator.sample_rate)
    seconds = audio.shape[0] / generator.sample_rate
    latency = f", first chunk after {first_chunk:.2f} s" if first_chunk is not None else ""
    typer.echo(
        f"wrote {out} ({seconds:.2f} s at {generator.sample_rate} Hz, seed {params.seed}) in {elapsed:.2f} s: "
        f"{seconds / elapsed:.1f}x real time{latency}"
    )


@app.command()
def info(model: Annotated[str, typer.Argument(help="A model directory or a preset name.")]) -> None:
    """Print a model's card: preset, sizes, limits, data version and sources, training commit, metrics."""
    from model import ModelInputError, MusicGenerator

    try:
        generator = MusicGenerator.load(model)
    except ModelInputError as error:
        raise fail(str(error)) from None
    config = generator.model.config
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    card = generator.card
    rows = {
        "model": model,
        "preset": card.preset,
        "text encoder": f"{config.text_encoder.model_type} ({count(generator.model.text_encoder) / 1e6:.1f}M)",
        "decoder": f"{config.decoder.num_hidden_layers} layers x {config.decoder.hidden_size} "
        f"({count(generator.model.decoder) / 1e6:.1f}M)",
        "codec": f"EnCodec {generator.sample_rate} Hz, {generator.frame_rate:g} frames/s, "
        f"{generator.num_codebooks} codebooks x {config.decoder.vocab_size} "
        f"({count(generator.model.audio_encoder) / 1e6:.1f}M)",
        "context": f"{card.context_seconds:g} s (long-form stride {card.extend_stride_seconds:g} s, "
        f"up to {card.max_duration_seconds:g} s)",
        "data version": card.data_version or "-",
        "data sources": ", ".join(f"{name} ({digest[:12]})" for name, digest in card.data_sources.items()) or "-",
        "training commit": card.training_commit or "-",
        "created": card.created,
    }
    rows.update({f"metric {k}": f"{v:.4g}" for k, v in card.metrics.items()})
    if card.notes:
        rows["notes"] = card.notes
    width = max(map(len, rows))
    for key, value in rows.items():
        typer.echo(f"{key:<{width}}  {value}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def evaluate(context: typer.Context) -> None:
    """Evaluate a model beside its baselines and decide promotion (the evaluate stage); --final reads the
    final split development never reads. `musicops evaluate --help` lists the options."""
    from components.evaluate import app as evaluate_app

    evaluate_app(context.args, prog_name="musicops evaluate")


@app.command()
def promote(
    model: Annotated[Path, typer.Option(help="The evaluated model directory.")] = paths.MODEL,
    evaluation: Annotated[Path, typer.Option(help="The evaluate stage's output.")] = paths.EVALUATION,
    to: Annotated[Path, typer.Option(help="The promoted model's folder (replaced atomically).")] = paths.PROMOTED,
    force: Annotated[bool, typer.Option("--force", help="Promote even though the gate refused.")] = False,
) -> None:
    """Promote a model the evaluation gate passed: the next evaluation compares against it, and serving
    and export read it from there."""
    from components.evaluation.gate import GateError
    from components.evaluation.gate import promote as promote_model

    try:
        folder = promote_model(model, evaluation, to, force=force)
    except GateError as error:
        raise fail(str(error), code=1) from None
    typer.echo(f"promoted {model} to {folder}")


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model directory, ONNX export or preset (default: artifacts/promoted/model, else artifacts/model).",
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto (onnx for an export folder), torch or onnx.")] = "auto",
    port: Annotated[int, typer.Option(help="The front's port: the web page and the streaming API.")] = 8000,
    predictor_port: Annotated[int, typer.Option(help="The KServe predictor's HTTP port (V1 and V2).")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="The KServe predictor's gRPC port (V2).")] = 8081,
    predictor: Annotated[bool, typer.Option(help="Also start the KServe predictor.")] = True,
    api_key: Annotated[
        str | None, typer.Option(envvar="MUSICOPS_API_KEY", help="Require this key on the front's API.")
    ] = None,
    log: Annotated[bool, typer.Option(help="Log every request for monitoring.")] = True,
    log_dir: Annotated[Path | None, typer.Option(help="The request log. Default: params.yaml monitor.log_dir.")] = None,
    reload_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between checks for a new model in the served folder (e.g. after `musicops promote`): "
            "the front swaps it in between requests, with no restart. 0 turns it off."
        ),
    ] = ServeSettings.reload_interval_s,
) -> None:
    """Serve a model here: the web page and streaming API (front) and the KServe predictor, on 127.0.0.1."""
    import logging

    from model.torch_threads import keep_to_one_thread
    from serving.local import FALLBACK_PRESET, default_model, request_logger, serve_locally
    from settings.params import MonitorParams, ParamsError, load_section

    threads = keep_to_one_thread()  # before the reference build loads anything: the engine's worker takes the cores
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("serving.reload").setLevel(logging.INFO)  # a model swapped in is worth a line, like a refusal
    source = model or default_model()
    if source == FALLBACK_PRESET and model is None:
        typer.secho(
            f"no model in {paths.PROMOTED}, {paths.MODEL} or {paths.BASE_MODEL}: serving the tiny preset with random "
            "weights (run `make demo` first)",
            err=True,
            fg=typer.colors.YELLOW,
        )
    try:
        settings = load_section(paths.PARAMS, "monitor") if paths.PARAMS.is_file() else MonitorParams()
        logger = None
        if log:
            log_dir = log_dir or Path(settings.log_dir)
            logger = request_logger(source, log_dir, Path(settings.reference), paths.MONITOR_REFERENCE, typer.echo)
        ports = (predictor_port, grpc_port) if predictor else None
        serve_locally(
            source,
            backend,
            port,
            ports,
            api_key,
            typer.echo,
            request_log=logger,
            threads=threads,
            reload_interval_s=reload_interval,
        )
    except (OSError, RuntimeError, TimeoutError, ParamsError) as error:
        raise fail(str(error).splitlines()[0]) from None


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where the demo writes its loss plot.")] = paths.DEMO,
) -> None:
    """Run the retraining loop on the embedded default: add a genre the base model never heard as new data, then
    `dvc repro` (corpus, validation, augmentation, tokens, fine-tuning the base model, evaluation before and after,
    the gate, ONNX export, Triton repository); promote the model if the gate passes, and print where everything is.
    """
    import json
    import subprocess

    from components.corpus.manifest import read_manifest
    from components.evaluate import before_after
    from components.evaluation.gate import promote as promote_model
    from components.training.plots import plot_losses
    from monitoring.trigger import dvc_environment
    from musicops.demo import add_new_genre

    if not Path("dvc.yaml").is_file():
        raise fail("run the demo from the musicops checkout: there is no dvc.yaml here")
    new = add_new_genre(paths.PARAMS, typer.echo)
    typer.echo("running the pipeline: dvc repro")
    if subprocess.run([sys.executable, "-m", "dvc", "repro"], env=dvc_environment()).returncode != 0:
        raise fail("dvc repro failed (its output above names the stage)", code=1)

    read = lambda path: json.loads(Path(path).read_text())  # noqa: E731
    corpus = read_manifest(paths.CORPUS)
    validation = read(paths.VALIDATION / "summary.json")
    training = read(paths.TRAIN / "dvclive" / "metrics.json")
    codec = read(paths.CODEC / "metrics.json")
    metrics = read(paths.EVALUATION / "metrics.json")
    decision = read(paths.EVALUATION / "decision.json")
    untrained_codec = codec["baselines"]["untrained"]
    losses = plot_losses(
        paths.TRAIN / "dvclive",
        out_dir / "losses.png",
        {"untrained (ln V)": training["uniform_loss"], "unigram": training["unigram_loss"]},
    )
    fad = metrics["fad"]["mel"] if "mel" in metrics["fad"] else next(iter(metrics["fad"].values()))
    tempo = metrics["adherence"].get("tempo_match", {})
    if decision["promote"]:
        gate = f"passed; promoted to {promote_model(paths.MODEL, paths.EVALUATION, paths.PROMOTED)}"
    else:
        gate = "refused: " + "; ".join(check["rule"] for check in decision["checks"] if not check["passed"])
    minutes = sum(clip.duration for clip in corpus) / 60
    rows = {
        "corpus": f"{paths.CORPUS} ({len(corpus)} clips, {minutes:.1f} min)",
        "validation": f"{paths.VALIDATION / validation['data_docs']} "
        f"({'passed' if validation['success'] else 'FAILED'} {validation['checks']} checks)",
        "codec": f"{paths.CODEC} (held-out log-mel distance {codec['mel_distance']:.3f}, untrained "
        f"{untrained_codec['mel_distance']:.3f}; SI-SNR {codec['si_snr_db']:.1f} dB)",
        "model": f"{paths.MODEL} (validation loss {training['best_valid_loss']:.3f}; untrained "
        f"{training['uniform_loss']:.3f}, unigram {training['unigram_loss']:.3f})",
        "loss plot": f"{losses} (or `dvc plots show`)",
        "report": f"{paths.EVALUATION / 'report.html'} (FAD mel {fad['model']:.2f}, untrained {fad['untrained']:.2f}, "
        f"real floor {fad['real']:.2f}; tempo followed {tempo.get('model', float('nan')):.0%}, untrained "
        f"{tempo.get('untrained', float('nan')):.0%})",
        "samples": f"{paths.EVALUATION / 'samples'}/ ({metrics['prompts']} held-out test prompts; captions in "
        f"{paths.EVALUATION / 'per_prompt.csv'})",
        "started": metrics["start"]["note"],
        "old split": before_after(metrics),
        **({f"new: {new}": before_after(metrics["new_data"][new])} if new in metrics["new_data"] else {}),
        "onnx": f"{paths.ONNX} (and int8/; Triton repository in {paths.TRITON})",
        "gate": gate,
        "next": "`make serve` (the page on http://127.0.0.1:8000/), then `musicops monitor report`",
    }
    for name, value in rows.items():
        typer.echo(f"{name:<11} {value}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
