"""`musicops base publish`: make a trained model the project's base model (models/base), the model a fresh clone
fine-tunes (`train.init_from: base`) instead of training from scratch.

The base model lives in git, so it is written slim (model.checkpoint's `slim`: the bundled text encoder left out,
float16 weights) with a README.md model card beside it: what it is, what it was trained on, its metrics, and the
command that rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from settings import paths

app = typer.Typer(
    help="The project's base model (models/base): the starting point of fine-tuning.", no_args_is_help=True
)

MAX_MB = 30.0  # what a model kept in git may weigh
# params.yaml's defaults fine-tune the base model; the base itself trains from scratch on the rendered corpus alone.
REBUILD = (
    "dvc exp run -S train.init_from=scratch -S train.adapter=full -S train.steps=1600 -S train.warmup_steps=50"
    " -S train.eval_every=200 -S tokenize.include_augmented=true -S 'data.sources=[]' evaluate"
    " && musicops evaluate --final && musicops base publish artifacts/model"
)
# The evaluation's headline numbers the card shows beside each embedder's FAD: (metric, what it is).
HEADLINE = {
    "tempo_match": "share of prompts whose tempo the audio follows",
    "key_score": "MIREX key score",
    "tag_kl": "pretrained musicnn tags, KL(real || generated), lower is better",
    "label_accuracy": "genre classifier's accuracy on the generated audio",
}


def evaluation_table(metrics: dict) -> str:
    """The evaluation's headline numbers as a markdown table: model beside untrained, with P(no gain). Its title
    says which split the evaluation read (the test split, or the final split `musicops evaluate --final` reads)."""
    rows = [
        f"| FAD ({embedder}), lower is better | {fad['model']:.2f} | {fad['untrained']:.2f} | "
        f"real floor {fad['real']:.2f} |"
        for embedder, fad in metrics["fad"].items()
    ]
    for name, what in HEADLINE.items():
        if name in metrics["adherence"]:
            values, gain = metrics["adherence"][name], metrics["gain_over_untrained"][name]
            rows.append(
                f"| {name} ({what}) | {values['model']:.2f} | {values['untrained']:.2f} | "
                f"P(no gain) {gain['p_no_gain']:.3f} |"
            )
    from components.evaluate import FINAL_SPLIT

    if metrics.get("split") == FINAL_SPLIT:
        title = (
            f"Evaluation on {metrics['prompts']} prompts of the final split (rendered from a seed development never "
            "reads; `musicops evaluate --final`)"
        )
    else:
        title = f"Evaluation on {metrics['prompts']} held-out test prompts (`musicops` evaluate stage)"
    return f"{title}:\n\n| metric | model | untrained | |\n|---|---|---|---|\n" + "\n".join(rows)


def model_card(directory: Path, source: Path, evaluation: dict | None = None, final: dict | None = None) -> str:
    """The base model's README.md: what it is, its training data, metrics, its evaluation on the test split and
    (`final`) on the final split, and how to rebuild it."""
    from model.checkpoint import ModelCard

    card = ModelCard.read(directory)
    metrics = "\n".join(f"| {name} | {value:.4g} |" for name, value in sorted(card.metrics.items())) or "| - | - |"
    sources = ", ".join(f"{name} ({digest[:12]})" for name, digest in card.data_sources.items()) or "none"
    return f"""# musicops base model

The model `train.init_from: base` fine-tunes: a MusicGen-style text-to-music model (preset `{card.preset}`),
published from `{source}` by `musicops base publish`. Weights in float16; the text encoder is the bundled
{card.text_encoder_weights or "one stored here"} (not stored here).

| | |
|---|---|
| created | {card.created} |
| training commit | {card.training_commit or "-"} |
| data version | {card.data_version or "-"} |
| data sources | {sources} |

| metric | value |
|---|---|
{metrics}

{evaluation_table(evaluation) if evaluation else "Not evaluated when it was published."}
{"" if final is None else chr(10) + evaluation_table(final) + chr(10)}
Rebuild it from this repository (params.yaml's data section is the base's corpus), in about two hours on 2 CPU cores:

    {REBUILD}
"""


@app.command()
def publish(
    model: Annotated[Path, typer.Argument(help="The trained model directory to publish.")] = paths.MODEL,
    to: Annotated[Path, typer.Option(help="The base model's folder (replaced atomically).")] = paths.BASE_MODEL,
    evaluation: Annotated[
        Path, typer.Option(help="MODEL's evaluation (its metrics.json goes into the card, when it is there).")
    ] = paths.EVALUATION,
    final_evaluation: Annotated[
        Path, typer.Option(help="MODEL's evaluation on the final split (musicops evaluate --final), if there.")
    ] = paths.FINAL_EVALUATION,
) -> None:
    """Write MODEL to the base model's folder, slim (float16, without the bundled text encoder) with a card."""
    import json

    from model import ModelInputError
    from model.atomic_io import atomic_file
    from model.checkpoint import load_model, save_model

    try:
        loaded, processor, card = load_model(model)
        save_model(loaded, processor, to, card, slim=True)
    except ModelInputError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    evaluated, final = (
        json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else None
        for folder in (evaluation, final_evaluation)
    )
    with atomic_file(to / "README.md") as handle:
        handle.write(model_card(to, model, evaluated, final).encode())
    size = sum(p.stat().st_size for p in to.rglob("*") if p.is_file()) / 1e6
    typer.echo(f"published {model} to {to} ({size:.1f} MB)")
    if size > MAX_MB:
        typer.secho(f"warning: {size:.1f} MB is more than the {MAX_MB:g} MB a model kept in git should weigh", err=True)
