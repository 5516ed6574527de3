"""Stage `prepare`: build the corpus (audio + captions manifest) from the configured source.

    python -m components.prepare --params params.yaml --out artifacts/data/corpus

`data.source: rendered` composes and renders the offline corpus; a folder path ingests the user's
audio. Each data source `data.sources` names (a folder under data/sources, added by `musicops data add`)
is ingested beside it, and `sources.json` records their content digests. The output folder appears only
when complete; a killed run resumes where it stopped (files already written for the same parameters and
source contents are kept).
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
from components.corpus.manifest import Clip, write_manifest, write_sources
from components.corpus.rendered import corpus_genres, render_corpus
from model.atomic_io import atomic_directory
from settings import paths
from settings.data_sources import CAPTIONS_FILE, source_digests, source_dir
from settings.params import DataParams, ParamsError, fingerprint, load_section


def check_sources(params: DataParams, root: str | Path = paths.DATA_SOURCES) -> None:
    """ParamsError naming a source `data.sources` lists twice, or one whose folder is missing."""
    repeated = sorted({name for name in params.sources if params.sources.count(name) > 1})
    if repeated:
        raise ParamsError(f"data.sources lists {', '.join(repeated)} more than once")
    for name in params.sources:
        folder = source_dir(name, root)
        if not folder.is_dir():
            raise ParamsError(
                f"data.sources lists {name!r} but {folder} does not exist: add it with "
                f"`musicops data add FOLDER --name {name}` (or `dvc pull` it), or remove it from data.sources"
            )


def _resume_key(params: DataParams, digests: dict[str, str]) -> str:
    """Same key, same contents: the parameters, for ingest the files' names, sizes and times, and the
    sources' content digests (a source whose files change must not resume into the old clips)."""
    key = fingerprint(params)
    if params.source != "rendered" and Path(params.source).is_dir():
        listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in find_audio(Path(params.source))]
        key += hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:8]
    if digests:
        key += hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:8]
    return key


def prepare(
    params: DataParams, out_dir: str | Path, show_progress: bool = True, sources_root: str | Path = paths.DATA_SOURCES
) -> list[Clip]:
    """Write the corpus of `params` to `out_dir` (manifest.jsonl, sources.json, audio/, and midi/ when rendered),
    reading the data sources from `sources_root`/<name>."""
    params.check()
    check_sources(params, sources_root)
    digests = source_digests(params.sources, sources_root)
    rendered = params.source == "rendered"
    if rendered:
        corpus_genres(params)  # an unknown data.genres name fails here, before a staging folder exists
    total = params.count if rendered else len(find_audio(Path(params.source))) if Path(params.source).is_dir() else 0
    total += sum(len(find_audio(source_dir(name, sources_root))) for name in digests)
    with (
        atomic_directory(out_dir, resume_key=_resume_key(params, digests)) as staging,
        tqdm(total=total, unit="clip" if rendered else "file", desc="prepare", disable=not show_progress) as bar,
    ):
        clips = render_corpus(params, staging, bar.update) if rendered else ingest_folder(params, staging, bar.update)
        for name in digests:
            folder = source_dir(name, sources_root)
            table = folder / CAPTIONS_FILE
            clips += ingest_folder(params, staging, bar.update, folder, table if table.is_file() else None, name=name)
        write_manifest(staging, clips)
        write_sources(staging, digests)
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
