"""Stage `prepare`: build the corpus (audio + captions manifest) from the configured source.

    python -m components.prepare --params params.yaml --out artifacts/data/corpus

`data.source: rendered` composes and renders the offline corpus; a folder path ingests the user's
audio. The output folder appears only when complete; a killed run resumes where it stopped (files
already written for the same parameters are kept).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from components.corpus.ingest import find_audio, ingest_folder
from components.corpus.manifest import Clip, write_manifest
from components.corpus.rendered import render_corpus
from model.atomic_io import atomic_directory
from settings import paths
from settings.params import DataParams, ParamsError, fingerprint, load_section


def _resume_key(params: DataParams) -> str:
    """Same key, same contents: the parameters, and for ingest the files' names, sizes and times."""
    key = fingerprint(params)
    if params.source != "rendered" and Path(params.source).is_dir():
        listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in find_audio(Path(params.source))]
        key += hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:8]
    return key


def prepare(params: DataParams, out_dir: str | Path, show_progress: bool = True) -> list[Clip]:
    """Write the corpus of `params` to `out_dir` (manifest.jsonl, audio/, and midi/ when rendered)."""
    params.check()
    rendered = params.source == "rendered"
    total = params.count if rendered else len(find_audio(Path(params.source))) if Path(params.source).is_dir() else 0
    with (
        atomic_directory(out_dir, resume_key=_resume_key(params)) as staging,
        tqdm(total=total, unit="clip" if rendered else "file", desc="prepare", disable=not show_progress) as bar,
    ):
        clips = render_corpus(params, staging, bar.update) if rendered else ingest_folder(params, staging, bar.update)
        write_manifest(staging, clips)
        (staging / "params.json").write_text(json.dumps(asdict(params), indent=2) + "\n")
    return clips


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[
        Path, typer.Option(help="The parameters file; this stage reads its `data` section.")
    ] = paths.PARAMS,
    out: Annotated[Path, typer.Option(help="Output folder for manifest.jsonl and the audio.")] = paths.CORPUS,
) -> None:
    """Render the offline corpus, or ingest a folder of audio, into a captioned manifest."""
    try:
        data = load_section(params, "data")
        clips = prepare(data, out)
    except ParamsError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    splits = Counter(clip.split for clip in clips)
    seconds = sum(clip.duration for clip in clips)
    typer.echo(
        f"prepared {len(clips)} clips ({seconds / 60:.1f} min; train {splits['train']}, valid {splits['valid']}, "
        f"test {splits['test']}) in {out}"
    )


if __name__ == "__main__":
    app()
