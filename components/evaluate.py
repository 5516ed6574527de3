"""Stage `evaluate`: generate for the held-out test prompts and measure the model beside its baselines.

    python -m components.evaluate --params params.yaml --model artifacts/model \\
        --corpus artifacts/data/corpus --out artifacts/evaluation

Four systems are measured on the same prompts: `model` (the trained model), `untrained` (the same
model with a freshly initialised decoder: what training bought), `codec` (the held-out clips encoded
and decoded by the model's codec: the best its decoder's tokens can sound, so the ceiling of what any
decoder over this codec can reach) and `real` (the held-out clips themselves: the ceiling of every
estimator; for FAD, the floor is real training audio against the real held-out audio). A fine-tuned model
(its card names the model training started from, `train.init_from`) has a fifth, `start`: that model, as it
was when training began, so each number has its "before" and "after" on the same prompts, and the gate
refuses a model that forgot what its start knew. Measured:
Fréchet Audio Distance with each configured embedder (numbers from different embedders are not
comparable), prompt adherence (tempo, key, a label classifier's accuracy and KL; and whether the
models keep the tempo of a real clip whose opening they continue), and audio quality
(model.audio_quality).

The output folder holds `metrics.json` (read by `dvc metrics show/diff`), `decision.json` (the
promotion gate; the pipeline's deploy step reads it), `report.html` (one self-contained page),
`per_prompt.csv`, `samples/` (the generated WAVs) and `reference/` (what monitoring compares served
traffic with: per-prompt features and each embedder's Gaussian statistics).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from components.corpus.manifest import Clip, ManifestError, read_manifest
from components.evaluation.adherence import ADHERENCE, ESTIMATORS
from components.evaluation.analysis import analyse_clips
from components.evaluation.bounds import adherence_bounds, fad_bounds
from components.evaluation.classifier import LabelClassifier, clip_vector, kl_divergence
from components.evaluation.datasets import CORPUS, dataset_of, held_out_splits
from components.evaluation.gate import Decision, GateError, decide
from components.evaluation.music_models import clip_tags, tag_adherence, tagger_for
from components.evaluation.outliers import fad_contributions
from components.evaluation.outputs import write_outputs
from components.evaluation.side_by_side import side_by_side
from components.evaluation.significance import paired_gain
from components.training.start import weights_digest
from model.audio import read_audio
from model.audio_quality import FEATURES, snr_db
from model.errors import ModelInputError
from model.frechet import frechet_audio_distance
from settings import paths
from settings.params import EvaluateParams, ParamsError, load_section

SYSTEMS = ("model", "untrained", "codec", "real")
FINAL_SPLIT = "holdout"  # metrics.json's `split` for the final evaluation (components/holdout.py)
START = "start"  # the model a fine-tuned model started from: measured beside it when its card names one


class EvaluateError(ValueError):
    """The corpus or model cannot be evaluated; the message says why."""


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    decision: Decision
    out_dir: Path


def _pick(clips: list[Clip], count: int, seed: int) -> list[Clip]:
    """`count` clips drawn without replacement, the same ones for the same seed."""
    if len(clips) <= count:
        return clips
    chosen = np.random.default_rng(seed).choice(len(clips), size=count, replace=False)
    return [clips[i] for i in sorted(chosen)]


def _generate(
    generator, prompts: list[str], params: EvaluateParams, label: str, openings: list[np.ndarray] | None = None
) -> tuple[list[np.ndarray], float]:
    """Audio per prompt in batches, and the wall time it took. With `openings` (the real clips), each is
    continued from its first `continuation_seconds` instead, and only what follows them is returned."""
    from model import GenerationParams

    cut = 0 if openings is None else round(params.continuation_seconds * generator.sample_rate)
    settings = GenerationParams(
        duration=params.duration - cut / generator.sample_rate,
        guidance_scale=params.guidance_scale,
        temperature=params.temperature,
        top_k=params.top_k,
        seed=params.seed,
    )
    audio, started = [], time.perf_counter()
    task = "generate" if openings is None else "continue"
    for start in tqdm(range(0, len(prompts), params.batch_size), desc=f"{task} ({label})", unit="batch"):
        batch = slice(start, start + params.batch_size)
        given = None if openings is None else np.stack([clip[:cut] for clip in openings[batch]])
        audio += [clip[cut:] for clip in generator.generate(prompts[batch], settings, audio_prompt=given).audio]
    return audio, time.perf_counter() - started


def _continuations(generators: dict[str, Any], audio: dict[str, list], prompts, params, tests) -> dict[str, list]:
    """Per system, the audio after each real test clip's first `continuation_seconds`: the `generators` (the
    model and its baseline) continue the clip, the real and codec systems are the clip itself and its codec copy."""
    rate = generators["model"].sample_rate
    cut = round(params.continuation_seconds * rate)
    for clip, real in zip(tests, audio["real"], strict=True):
        if real.size <= cut:
            raise EvaluateError(
                f"test clip {clip.id} is {real.size / rate:.1f} s long: too short to continue from its first "
                f"{params.continuation_seconds} s (lower evaluate.continuation_seconds; 0 turns it off)"
            )
    jobs = {name: partial(_generate, g, prompts, params, name, audio["real"]) for name, g in generators.items()}
    continued = {name: clips for name, (clips, _) in side_by_side(jobs).items()}
    return continued | {system: [clip[cut:] for clip in audio[system]] for system in ("real", "codec")}


def settings_fingerprint(params: EvaluateParams, tests: list[Clip], split: str = "test") -> str:
    """What makes two evaluations comparable: the same prompts, generation settings and embedders."""
    fields = asdict(params)
    compared = {
        k: fields[k] for k in ("seed", "duration", "guidance_scale", "temperature", "top_k", "continuation_seconds")
    }
    compared |= {
        "embedders": list(params.embedders),
        "vggish": Path(params.vggish_weights).name if params.vggish_weights else None,
        "reference_clips": params.reference_clips,
        "classifier": [params.classifier_label, params.classifier_embedder],
        "estimators": ESTIMATORS,
        "prompts": [clip.id for clip in tests],
        "split": split,
    }
    return hashlib.sha256(json.dumps(compared, sort_keys=True).encode()).hexdigest()[:12]


def starting_model(card) -> tuple[Path | None, str]:
    """The directory a fine-tuned model started from, when it still holds the weights training started from;
    else None. With a line saying which, for metrics.json."""
    if not card.started_from:
        return None, "trained from scratch: no starting model to compare with"
    directory = Path(card.started_from)
    if not (directory / "config.json").is_file():
        return None, f"the starting model {directory} is not here: not measured"
    if weights_digest(directory) != card.started_from_sha256:
        return None, f"the starting model {directory} has changed since training started from it: not measured"
    return directory, f"the starting model {directory}, as training started from it"


def before_after(split: dict[str, Any]) -> str:
    """One line on a split: each adherence metric and FAD (mel, else the first embedder), the model beside the
    model it started from (with the paired gain's P) when it has one, else beside the untrained model."""
    baseline = START if "gain_over_start" in split else "untrained"
    gains = split[f"gain_over_{baseline}"]
    parts = [
        f"{name} {split['adherence'][name][baseline]:.2f} -> {split['adherence'][name]['model']:.2f} "
        f"(P(no gain) {gain['p_no_gain']:.3f})"
        for name, gain in gains.items()
    ]
    embedder = "mel" if "mel" in split["fad"] else next(iter(split["fad"]))
    fad = split["fad"][embedder]
    parts.append(f"FAD ({embedder}) {fad[baseline]:.2f} -> {fad['model']:.2f}")
    return f"{baseline} -> model: " + ", ".join(parts)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate(
    model_dir: Path,
    corpus_dir: Path,
    out_dir: Path,
    params: EvaluateParams,
    vggish_weights: Path | None = None,
    onnx_dir: Path | None = None,
    holdout_dir: Path | None = None,
) -> Evaluation:
    """Evaluate the model in `model_dir` on the test split of `corpus_dir`; write everything to `out_dir`.

    With `onnx_dir` (an export of that model, e.g. its int8/ folder) the model's samples come from the
    ONNX Runtime backend instead, so an export's quality cost is measured beside the same baselines. With
    `holdout_dir` (the final split, components/holdout.py) the prompts come from that corpus instead, and
    `corpus_dir` gives only the training clips (the FAD floor and the label classifier)."""
    import torch

    from model import MusicGenerator
    from model.embedders import make_embedder

    clips = read_manifest(corpus_dir)
    prompts_dir = holdout_dir or corpus_dir  # where the prompts' real clips are
    splits = held_out_splits(read_manifest(holdout_dir) if holdout_dir else clips, params.max_prompts)
    if CORPUS not in splits:
        raise EvaluateError(f"the corpus in {prompts_dir} has no test clips to evaluate on")
    tests = [clip for split in splits.values() for clip in split]  # the main corpus's first
    # The FAD floor's real audio is the main corpus's, so the headline numbers stay comparable across new data.
    trained = [clip for clip in clips if clip.split == "train" and dataset_of(clip) == CORPUS]
    references = _pick(trained, params.reference_clips, params.seed)
    if len(references) < 2:
        raise EvaluateError(f"the corpus in {corpus_dir} has fewer than two training clips (the FAD floor)")
    if not (Path(model_dir) / "config.json").is_file():
        raise EvaluateError(f"no model in {model_dir}: it has no config.json (run the train stage first)")

    generator = MusicGenerator.load(model_dir)
    start_dir, start_note = starting_model(generator.card)
    systems = ("model", START, *SYSTEMS[1:]) if start_dir else SYSTEMS
    rate = generator.sample_rate
    length = round(params.duration * rate)
    prompts = [clip.caption for clip in tests]
    audio: dict[str, list[np.ndarray]] = {}
    if onnx_dir is not None:
        from model import OnnxMusicGenerator

        audio["model"], model_seconds = _generate(OnnxMusicGenerator.load(onnx_dir), prompts, params, "model")
    else:
        audio["model"], model_seconds = _generate(generator, prompts, params, "model")
    baselines = {"untrained": generator.untrained(params.seed)}
    if start_dir:
        baselines[START] = MusicGenerator.load(start_dir)
    generated = side_by_side({name: partial(_generate, g, prompts, params, name) for name, g in baselines.items()})
    audio |= {name: clips for name, (clips, _) in generated.items()}
    # The generators that continue real openings: a fine-tuned model's gains are over its start, which continues
    # them in the untrained one's place.
    continuing = {"model": generator, START: baselines[START]} if start_dir else {"model": generator} | baselines
    audio["real"] = [read_audio(prompts_dir / clip.path, rate)[:length] for clip in tests]
    with torch.inference_mode():
        audio["codec"] = [generator.decode_audio(generator.encode_audio(a[None]))[0][:length] for a in audio["real"]]
    reference_audio = [read_audio(corpus_dir / clip.path, rate)[:length] for clip in references]
    # The ONNX export has no codec encoder to read a real opening with, so its evaluation skips this.
    continued = None
    if params.continuation_seconds and onnx_dir is None:
        continued = _continuations(continuing, audio, prompts, params, tests)

    # Frame embeddings per embedder and system; the FAD floor compares real training and test audio.
    weights = vggish_weights or params.vggish_weights
    embedders = {
        name: make_embedder(name, codec=generator.model.audio_encoder, vggish_weights=weights)
        for name in params.embedders
    }
    frames: dict[str, dict[str, list[np.ndarray]]] = {}
    with torch.inference_mode():
        for name, embedder in tqdm(embedders.items(), desc="embed", unit="embedder"):
            frames[name] = {system: [embedder.embed(a, rate) for a in audio[system]] for system in systems}
            frames[name]["reference"] = [embedder.embed(a, rate) for a in reference_audio]
        # The label classifier also learns the labels of the new data's training clips (a genre the main corpus
        # lacks cannot be recognised otherwise); FAD's floor stays the main corpus's.
        label = params.classifier_label
        new = [c for c in clips if c.split == "train" and dataset_of(c) != CORPUS and c.labels.get(label) is not None]
        # As many per label as the references hold per label, so the new labels do not outweigh the old in its prior.
        per_label = len(references) // max(1, len({str(clip.labels.get(label)) for clip in references}))
        extra = _pick(new, max(1, per_label) * len({str(clip.labels[label]) for clip in new}), params.seed)
        embedder = embedders[params.classifier_embedder]
        extra_frames = [embedder.embed(read_audio(corpus_dir / clip.path, rate)[:length], rate) for clip in extra]
        tagger, tags_note = tagger_for(embedders, params.duration)
        tags = clip_tags(tagger, audio, rate, systems) if tagger else None
    classifier_data = (references + extra, frames[params.classifier_embedder]["reference"] + extra_frames)
    tagged = (tagger, tags) if tags else None
    rows = _per_prompt_rows(tests, classifier_data, audio, continued, tagged, frames, params, rate, systems)
    old = splits[CORPUS]  # first in `tests`
    gate_frames = frames[params.gate_embedder]
    contributions = fad_contributions(gate_frames["model"][: len(old)], gate_frames["real"][: len(old)])
    by_id = {clip.id: contribution for clip, contribution in zip(old, contributions, strict=True)}
    for row in rows:
        if row["system"] == "model" and row["id"] in by_id:
            row["fad_contribution"] = by_id[row["id"]]
    snr = [snr_db(real, codec) for real, codec in zip(audio["real"], audio["codec"], strict=True)]
    metrics = _split_metrics(old, tests, rows, frames, params, systems)
    # FAD's bounds, for the split the gate reads and its embedder only: each draw of prompts costs a FAD per
    # system, and under every embedder the demo's evaluation took about 14 minutes longer.
    at = list(range(len(old)))
    metrics["intervals"]["fad"] = {params.gate_embedder: fad_bounds(gate_frames, at, systems, params.seed)}
    metrics |= {
        "start": {"directory": str(start_dir) if start_dir else None, "note": start_note},
        "tags": tags_note,
        "codec_snr_db": _mean(snr[: len(old)]),
        "prompts": len(old),
        "real_time_factor": len(tests) * params.duration / model_seconds,
        "split": FINAL_SPLIT if holdout_dir else "test",
        "settings": settings_fingerprint(params, old, FINAL_SPLIT if holdout_dir else "test"),
    }
    new_data = {name: _split_metrics(split, tests, rows, frames, params, systems) for name, split in splits.items()}
    metrics["new_data"] = {name: values | {"prompts": len(splits[name])} for name, values in new_data.items()}
    del metrics["new_data"][CORPUS]
    decision = decide(metrics, params, params.promoted)
    write_outputs(out_dir, metrics, decision, rows, audio, frames, tests, generator, params, embedders, systems)
    return Evaluation(metrics, decision, out_dir)


def _split_metrics(split: list[Clip], tests: list[Clip], rows, frames, params: EvaluateParams, systems) -> dict:
    """FAD, adherence with its gains, and quality over one dataset's test clips (`split`, a part of `tests`)."""
    ids = {clip.id for clip in split}
    at = [i for i, clip in enumerate(tests) if clip.id in ids]
    mine = [row for row in rows if row["id"] in ids]
    fad = {}
    for name, f in frames.items():  # over embedding frames: one clip gives many
        real = np.concatenate([f["real"][i] for i in at])
        fad[name] = {
            system: frechet_audio_distance(
                np.concatenate(f["reference"] if system == "real" else [f[system][i] for i in at]), real
            )
            for system in systems
        }
    metrics = {
        "fad": fad,
        "adherence": _summaries(mine, list(ADHERENCE), systems),
        "gain_over_untrained": _gains(mine, list(ADHERENCE), params.seed),
        "quality": _summaries(mine, list(FEATURES), systems),
        "intervals": {"adherence": adherence_bounds(mine, list(ADHERENCE), systems, params.seed)},
    }
    if START in systems:
        metrics["gain_over_start"] = _gains(mine, list(ADHERENCE), params.seed, baseline=START)
    return metrics


def _per_prompt_rows(
    tests, classifier_data, audio, continued, tagged, frames, params, rate, systems
) -> list[dict[str, Any]]:
    """One row per (system, prompt): labels, features, adherence, the tagger's and the label classifier's view.
    `classifier_data`: the clips the label classifier learns from, and their embedding frames; `tagged`: the
    musicnn tagger and each system's clips' tags, or None."""
    label = params.classifier_label
    known, known_frames = classifier_data
    train_labels = [str(clip.labels.get(label)) for clip in known]
    classifier = None
    # The main corpus's labels decide: a data source's clips carry a caption, and that label only if it has one.
    labelled = [*known, *(clip for clip in tests if dataset_of(clip) == CORPUS)]
    if all(clip.labels.get(label) is not None for clip in labelled) and len(set(train_labels)) > 1:
        vectors = np.stack([clip_vector(f) for f in known_frames])
        classifier = LabelClassifier(params.seed).fit(vectors, train_labels)
    probabilities = {}
    if classifier:
        for system in systems:
            vectors = np.stack([clip_vector(f) for f in frames[params.classifier_embedder][system]])
            probabilities[system] = classifier.probabilities(vectors)
    work = [(system, i) for system in systems for i in range(len(tests))]
    tasks = [
        (audio[system][i], rate, tests[i].labels, continued[system][i] if continued and system in continued else None)
        for system, i in work
    ]
    rows = []
    for (system, i), measured in zip(work, analyse_clips(tasks, params.workers), strict=True):
        clip = tests[i]
        row = {"system": system, "id": clip.id, "caption": clip.caption, **_truth(clip.labels)} | measured
        if tagged:
            tagger, tags = tagged
            row |= tag_adherence(tagger, tags[system][i], tags["real"][i], clip.labels, system == "real")
        if classifier and clip.labels.get(label) is not None:
            p = probabilities[system][i]
            truth = str(clip.labels[label])
            row["label_predicted"] = classifier.classes[int(p.argmax())]
            row["label_accuracy"] = float(row["label_predicted"] == truth)
            # A label no reference clip had cannot be predicted: probability 0.
            row["label_probability"] = float(p[classifier.classes.index(truth)]) if truth in classifier.classes else 0.0
            # MusicGen's KL: the real clip of the prompt against the generated one (zero for real itself).
            row["label_kl"] = float(kl_divergence(probabilities["real"][i], p)) if system != "real" else math.nan
        rows.append(row)
    return rows


def _truth(labels: dict[str, Any]) -> dict[str, Any]:
    return {f"true_{name}": labels.get(name) for name in ("genre", "tempo", "key", "mood")}


def _summaries(rows: list[dict[str, Any]], names: list[str], systems) -> dict[str, dict[str, float]]:
    """Per metric and system, the mean over prompts (metrics no row has are left out)."""
    present = [name for name in names if any(name in row for row in rows)]
    return {
        name: {system: _mean([row.get(name) for row in rows if row["system"] == system]) for system in systems}
        for name in present
    }


def _gains(
    rows: list[dict[str, Any]], names: list[str], seed: int, baseline: str = "untrained"
) -> dict[str, dict[str, float]]:
    """Per adherence metric, the model's paired gain over `baseline` (another system) on the same prompts."""
    by_system = {system: [row for row in rows if row["system"] == system] for system in ("model", baseline)}
    return {
        name: paired_gain(
            [row.get(name) for row in by_system["model"]],
            [row.get(name) for row in by_system[baseline]],
            ADHERENCE[name][1],
            seed,
        )
        for name in names
        if any(name in row for row in rows)
    }


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its evaluate section.")] = paths.PARAMS,
    model: Annotated[Path, typer.Option(help="The trained model directory.")] = paths.MODEL,
    corpus: Annotated[
        Path, typer.Option(help="The corpus: its test split holds the prompts (with --final, only its training clips).")
    ] = paths.CORPUS,
    out: Annotated[Path, typer.Option(help="Where metrics, decision, report and samples go.")] = paths.EVALUATION,
    onnx: Annotated[
        Path | None, typer.Option(help="Generate the model's samples with this ONNX export (e.g. artifacts/onnx/int8).")
    ] = None,
    final: Annotated[
        bool,
        typer.Option(
            "--final",
            help=f"Read the final split instead of the test split: clips rendered from a seed development never "
            f"reads, into {paths.HOLDOUT} on first use. Writes to {paths.FINAL_EVALUATION} unless --out says.",
        ),
    ] = False,
    holdout: Annotated[
        Path | None, typer.Option(help="With --final: your own prepared corpus to read instead of the rendered one.")
    ] = None,
) -> None:
    """Evaluate the trained model (FAD, adherence, quality) beside its baselines and decide promotion."""
    from components.holdout import ensure_holdout

    if holdout and not final:
        raise typer.BadParameter("--holdout names the final split's corpus: use it with --final")
    try:
        section = load_section(params, "evaluate")
        if final:
            holdout = holdout or ensure_holdout(load_section(params, "data"))
            out = paths.FINAL_EVALUATION if out == paths.EVALUATION else out
        result = evaluate(model, corpus, out, section, onnx_dir=onnx, holdout_dir=holdout)
    except (ParamsError, ManifestError, ModelInputError, EvaluateError, GateError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    metrics, decision = result.metrics, result.decision
    for name, values in metrics["fad"].items():
        typer.echo(
            f"FAD ({name}): model {values['model']:.3f}, untrained {values['untrained']:.3f}, "
            f"real floor {values['real']:.3f}"
        )
    for name, gain in metrics["gain_over_untrained"].items():
        typer.echo(
            f"{name}: model {metrics['adherence'][name]['model']:.3f}, untrained "
            f"{metrics['adherence'][name]['untrained']:.3f}; gain {gain['gain']:+.3f} "
            f"[{gain['low']:+.3f}, {gain['high']:+.3f}], P(no gain) {gain['p_no_gain']:.3f}"
        )
    typer.echo(f"start: {metrics['start']['note']}")
    for title, split in [("test split", metrics)] * ("gain_over_start" in metrics) + [
        (f"new data {source} ({split['prompts']} prompts)", split) for source, split in metrics["new_data"].items()
    ]:
        typer.echo(f"{title}: {before_after(split)}")
    verdict = "PROMOTE" if decision.promote else "REFUSED"
    failed = [check.rule for check in decision.checks if not check.passed]
    typer.echo(f"gate: {verdict}" + (f" ({'; '.join(failed)})" if failed else ""))
    typer.echo(f"report: {out / 'report.html'} ({metrics['split']} split)")


if __name__ == "__main__":
    app()
