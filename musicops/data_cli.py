"""`musicops data`: add a folder of your own audio and captions as a data source that training reads.

`musicops data add FOLDER` validates the folder with the project's Great Expectations suite (the folder is
ingested into a temporary corpus with params.yaml's `data` settings, exactly as the prepare stage will), and
only when every check passes: copies its audio and a `captions.csv` into `data/sources/<name>` (whole or not
at all), runs `dvc add` on it when the repository uses DVC, and appends the name to params.yaml's
`data.sources`, keeping the file's comments and layout. Paths are relative to the working directory, the
repository root, as every other command's defaults are.

`musicops data render FOLDER --genre GENRE` renders clips of one genre of the offline corpus into FOLDER in the
layout `data add` takes (audio files and a `captions.csv` with the clips' genre, tempo, key and mood): with
params.yaml's `data.genres` leaving that genre out of the base model's corpus, it is the new data the retraining
demo fine-tunes on.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from settings import paths
from settings.data_sources import CAPTIONS_FILE, source_dir

if TYPE_CHECKING:
    from components.validate import ValidationSummary

app = typer.Typer(
    help="Your own training data: add a folder of audio and captions as a DVC-tracked data source, or render "
    "one genre of the offline corpus as such a folder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# A folder name that is also a safe clip-id prefix and a plain YAML scalar.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# `data render`'s default count: as many clips as the rendered corpus holds test prompts, and enough for
# ingest's train/valid/test split of whole files to leave each split a couple.
RENDER_COUNT = 24


class DataAddError(ValueError):
    """The folder, name or repository cannot take the new source; the message says why and what to do."""


def check_name(name: str, root: Path, listed: list[str], replace_existing: bool) -> None:
    """DataAddError for a name that is not a plain folder name, or one already in use (unless replacing)."""
    if not NAME_PATTERN.fullmatch(name):
        raise DataAddError(f"source name {name!r} must be letters, digits, '.', '_' or '-' (give one with --name)")
    if not replace_existing and (source_dir(name, root).exists() or name in listed):
        raise DataAddError(f"a data source named {name!r} already exists: pick another --name, or pass --replace")


def validate_folder(folder: Path, captions: Path | None, params_file: Path, work: Path) -> ValidationSummary:
    """Ingest `folder` into a corpus under `work` with the params' data settings and run the validation suite on it.

    ParamsError when the folder has no audio or a file has no caption.
    """
    from components.prepare import prepare
    from components.validate import validate_corpus
    from settings.params import load_section

    data = load_section(params_file, "data")
    data = replace(data, source=str(folder), captions=str(captions) if captions else None, sources=[])
    prepare(data, work / "corpus", show_progress=False)
    return validate_corpus(work / "corpus", work / "validation", data, load_section(params_file, "validate"))


def copy_source(folder: Path, captions: Path | None, target: Path) -> int:
    """Copy the audio files of `folder` (relative paths kept) and their captions, as `captions.csv`, into
    `target`, which appears whole or not at all (replacing what was there). The table keeps the label columns
    (`LABEL_COLUMNS`, in that order) that any file has a label in. Returns the number of files."""
    from components.corpus.ingest import LABEL_COLUMNS, find_audio, read_captions, read_labels
    from model.atomic_io import atomic_directory

    files = find_audio(folder)
    texts = read_captions(folder, files, str(captions) if captions else None)
    labels = read_labels(folder, files, str(captions) if captions else None)
    columns = [name for name in LABEL_COLUMNS if any(name in labels[file] for file in files)]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "caption", *columns])
    with atomic_directory(target) as staging:
        for file in files:
            relative = file.relative_to(folder)
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, staging / relative)
            writer.writerow([relative.as_posix(), texts[file], *(labels[file].get(name, "") for name in columns)])
        (staging / CAPTIONS_FILE).write_text(table.getvalue())
    return len(files)


def dvc_add(target: Path) -> bool:
    """`dvc add target` when the working directory is a DVC repository (it has .dvc/); False when it is not."""
    if not Path(".dvc").is_dir():
        return False
    result = subprocess.run([sys.executable, "-m", "dvc", "add", str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        raise DataAddError(f"`dvc add {target}` failed: {(result.stderr or result.stdout).strip()}")
    return True


def list_source(params_file: Path, name: str) -> list[str]:
    """Append `name` to params.yaml's data.sources (if absent) in round-trip mode: comments and layout stay."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip by default
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    # Round-trip mode writes None as an empty value; params.yaml spells it null.
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = yaml.load(params_file.read_text())
    data = document.setdefault("data", {})
    sources = data.get("sources")
    if sources is None:
        data["sources"] = sources = []
    flow = not sources or sources.fa.flow_style()  # `sources: []` stays one line: `sources: [a, b]`
    if name not in sources:
        sources.append(name)
    if flow and hasattr(sources, "fa"):
        sources.fa.set_flow_style()
    text = io.StringIO()
    yaml.dump(document, text)
    params_file.write_text(text.getvalue())
    return list(sources)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


ADD_HELP = (
    "Validate FOLDER, copy it to data/sources/NAME, track it with DVC and list it in params.yaml's data.sources.\n\n"
    "Validation ingests FOLDER as the prepare stage will (params.yaml's clip length and sample rate) and runs the "
    "project's Great Expectations suite: silent or clipped audio, captions too short or too long, files that do not "
    "decode. If any check fails, nothing is changed.\n\n"
    "Afterwards `dvc repro` prepares the corpus with the new source beside the main one and retrains."
)


@app.command(help=ADD_HELP)
def add(
    folder: Annotated[
        Path, typer.Argument(help="A folder of audio files (wav, flac, ogg, mp3, aiff; searched recursively).")
    ],
    captions: Annotated[
        Path | None,
        typer.Option(
            help="A CSV (file,caption columns) or JSONL table of captions, file paths relative to FOLDER; optional "
            "genre, tempo (BPM), key ('A minor') and mood columns label the clips, so evaluation measures prompt "
            f"adherence on them. Default: FOLDER/{CAPTIONS_FILE} if there is one, else a .txt caption beside each "
            "audio file."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The source's name (letters, digits, . _ -). Default: FOLDER's name.")
    ] = None,
    replace_existing: Annotated[
        bool, typer.Option("--replace", help="Replace the source of that name if it already exists.")
    ] = False,
    params: Annotated[
        Path, typer.Option(help="The parameters file: its data and validate sections; data.sources gets the name.")
    ] = paths.PARAMS,
) -> None:
    """Add FOLDER as a data source (the help is ADD_HELP: rich reflows one-line paragraphs best)."""
    from settings.params import ParamsError, load_section

    if not folder.is_dir():
        raise _fail(f"{folder} is not a folder")
    if captions is None and (folder / CAPTIONS_FILE).is_file():
        captions = folder / CAPTIONS_FILE
    name = name or folder.resolve().name
    try:
        listed = load_section(params, "data").sources
        check_name(name, paths.DATA_SOURCES, listed, replace_existing)
        with tempfile.TemporaryDirectory(prefix="musicops-data-add-") as work:
            summary = validate_folder(folder, captions, params, Path(work))
    except (ParamsError, DataAddError) as error:
        raise _fail(str(error)) from None
    if not summary.success:
        typer.echo(f"{folder} failed {len(summary.failures)} of {summary.checks} checks on {summary.clips} clips:")
        for failure in summary.failures:
            typer.echo(f"  {failure.line()}")
        typer.echo("nothing was added; fix these (or the thresholds in params.yaml's validate section) and rerun")
        raise typer.Exit(1)
    target = source_dir(name)
    try:
        files = copy_source(folder, captions, target)
        tracked = dvc_add(target)
    except (ParamsError, DataAddError) as error:
        raise _fail(str(error)) from None
    sources = list_source(params, name)
    typer.echo(f"✓ {summary.clips} clips from {files} files passed all {summary.checks} checks")
    typer.echo(f"copied to {target} (audio and {CAPTIONS_FILE})")
    if tracked:
        typer.echo(
            f"tracked by DVC: {target}.dvc; commit it with `git add {target}.dvc {target.parent / '.gitignore'} "
            f"{params}` and share the audio with `dvc push`"
        )
    else:
        typer.echo(f"not tracked by DVC: {Path.cwd()} has no .dvc/ (`dvc init`, then `dvc add {target}` versions it)")
    typer.echo(f"{params}: data.sources is now [{', '.join(sources)}]")
    typer.echo("next: `dvc repro` prepares the corpus with it and retrains (`musicops demo` also promotes the model)")


RENDER_HELP = (
    "Render COUNT clips of GENRE, composed, rendered and captioned as the offline corpus is, into FOLDER: audio "
    f"files and a {CAPTIONS_FILE} (file, caption and each clip's genre, tempo, key and mood), the layout "
    "`musicops data add FOLDER` takes.\n\n"
    "Sample rate, clip length and audio format are params.yaml's data section's. The clips come from a seed stream "
    "of the genre's own, so none is a clip of the corpus. With data.genres leaving GENRE out of the corpus, the base "
    "model never heard it: `musicops data add FOLDER` then brings it in as new data to fine-tune on.\n\n"
    "FOLDER must not exist or be empty; it appears whole or not at all."
)


@app.command(help=RENDER_HELP)
def render(
    folder: Annotated[Path, typer.Argument(help="Where the clips go (a new or empty folder).")],
    genre: Annotated[str, typer.Option(help="A genre of the rendered corpus, e.g. jazz or 'hip hop'.")],
    count: Annotated[int, typer.Option(min=1, help="How many clips.")] = RENDER_COUNT,
    seed: Annotated[int | None, typer.Option(help="The seed of the clips. Default: params.yaml's data.seed.")] = None,
    params: Annotated[
        Path, typer.Option(help="The parameters file: its data section's sample_rate, clip_seconds, audio_format.")
    ] = paths.PARAMS,
) -> None:
    """Render GENRE's clips into FOLDER (the help is RENDER_HELP)."""
    from tqdm import tqdm

    from components.corpus.rendered import check_genres, render_genre
    from model.atomic_io import atomic_directory
    from settings.params import ParamsError, load_section

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise _fail(f"{folder} already exists and is not an empty folder: name a new one")
    try:
        check_genres([genre])
        data = load_section(params, "data")
    except ParamsError as error:
        raise _fail(str(error)) from None
    if seed is not None:
        data = replace(data, seed=seed)
    with atomic_directory(folder) as staging, tqdm(total=count, unit="clip", desc=f"render {genre}") as bar:
        render_genre(genre, count, data, staging, bar.update)
    typer.echo(
        f"rendered {count} {genre} clips ({count * data.clip_seconds / 60:.1f} min, {data.sample_rate} Hz "
        f"{data.audio_format}) and {CAPTIONS_FILE} into {folder}"
    )
    typer.echo(f"next: `musicops data add {folder}` adds them as a data source")
