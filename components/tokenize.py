"""Stage `tokenize`: encode the corpus (and its augmented copies) into codebook tokens with the codec.

    python -m components.tokenize --params params.yaml --codec artifacts/codec \\
        --corpus artifacts/data/corpus --corpus artifacts/data/augmented --out artifacts/tokens

The output folder holds `codes.npy` (int16 [codebooks, frames of all clips end to end], memory-mapped
by training), `index.jsonl` (per clip: id, caption, labels, split, source, offset and frame count
into codes.npy), `tokens.json` (the codec's rate, frame rate and codebook shape) and the corpus's
`sources.json` (the data sources in it, which training writes into the model card).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from components.corpus.manifest import Clip, ManifestError, read_manifest, read_sources, write_sources
from model.atomic_io import atomic_directory
from model.audio import read_audio
from model.errors import first_line
from settings import paths
from settings.params import ParamsError, TokenizeParams, load_section

INDEX_FILE, CODES_FILE, INFO_FILE = "index.jsonl", "codes.npy", "tokens.json"


class TokenizeError(ValueError):
    """The codec or corpus cannot be used; the message names which and why."""


@dataclass
class TokenizedClip:
    id: str
    caption: str
    split: str
    source: str
    offset: int  # first frame in codes.npy
    frames: int
    labels: dict[str, Any]


def load_codec(codec_dir: Path):
    """The transformers EncodecModel in `codec_dir`, or TokenizeError naming what is wrong."""
    from transformers import EncodecModel

    if not (codec_dir / "config.json").is_file():
        raise TokenizeError(f"no codec in {codec_dir}: it has no config.json (run the train_codec stage first)")
    try:
        return EncodecModel.from_pretrained(codec_dir, local_files_only=True).eval()
    except Exception as error:  # a boundary: any unreadable checkpoint is a bad codec directory
        raise TokenizeError(f"cannot load the codec in {codec_dir}: {first_line(error)}") from None


def _batches(items: list[tuple[Path, Clip, np.ndarray]], size: int):
    """Consecutive clips of equal length, at most `size` at a time (no padding needed)."""
    batch: list[tuple[Path, Clip, np.ndarray]] = []
    for item in items:
        if batch and (len(batch) == size or len(item[2]) != len(batch[0][2])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def tokenize(codec_dir: Path, corpus_dirs: list[Path], out_dir: Path, params: TokenizeParams) -> list[TokenizedClip]:
    """Encode every clip of `corpus_dirs` with the codec in `codec_dir` into `out_dir`."""
    import torch

    codec = load_codec(codec_dir)
    config = codec.config
    bandwidth = config.target_bandwidths[-1]
    clips = [(folder, clip) for folder in corpus_dirs for clip in read_manifest(folder)]
    sources = {name: digest for folder in corpus_dirs for name, digest in read_sources(folder).items()}
    loaded = [(folder, clip, read_audio(folder / clip.path, config.sampling_rate)) for folder, clip in clips]
    loaded.sort(key=lambda item: (len(item[2]), item[1].id))
    pieces, index, offset = [], [], 0
    with torch.inference_mode(), tqdm(total=len(loaded), desc="tokenize", unit="clip") as bar:
        for batch in _batches(loaded, params.batch_size):
            values = torch.from_numpy(np.stack([audio for _, _, audio in batch]))[:, None, :]
            codes = codec.encode(values, bandwidth=bandwidth).audio_codes[0]  # [B, K, frames]
            for (_, clip, _), clip_codes in zip(batch, codes, strict=True):
                pieces.append(clip_codes.numpy().astype(np.int16))
                frames = clip_codes.shape[1]
                index.append(TokenizedClip(clip.id, clip.caption, clip.split, clip.source, offset, frames, clip.labels))
                offset += frames
            bar.update(len(batch))
    info = {
        "sample_rate": config.sampling_rate,
        "frame_rate": config.frame_rate,
        "num_codebooks": int(pieces[0].shape[0]),
        "codebook_size": config.codebook_size,
        "clips": len(index),
        "frames": offset,
    }
    with atomic_directory(out_dir) as staging:
        np.save(staging / CODES_FILE, np.concatenate(pieces, axis=1))
        (staging / INDEX_FILE).write_text("".join(json.dumps(asdict(entry)) + "\n" for entry in index))
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        write_sources(staging, sources)  # travels with the tokens folder (dvc and Kubeflow pass folders whole)
    return index


def read_tokens(folder: Path) -> tuple[np.ndarray, list[TokenizedClip], dict[str, Any]]:
    """codes (memory-mapped int16 [K, frames]), the index and the info of a tokens folder."""
    for name in (CODES_FILE, INDEX_FILE, INFO_FILE):
        if not (folder / name).is_file():
            raise TokenizeError(f"no tokens in {folder}: {name} is missing (run the tokenize stage first)")
    codes = np.load(folder / CODES_FILE, mmap_mode="r")
    index = [TokenizedClip(**json.loads(line)) for line in (folder / INDEX_FILE).read_text().splitlines() if line]
    return codes, index, json.loads((folder / INFO_FILE).read_text())


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its tokenize section.")] = paths.PARAMS,
    codec: Annotated[Path, typer.Option(help="The codec directory (train_codec's output).")] = paths.CODEC,
    corpus: Annotated[
        list[Path] | None, typer.Option(help="Corpus folders to encode (repeatable); default: corpus and augmented.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder: codes.npy, index.jsonl, tokens.json.")] = paths.TOKENS,
) -> None:
    """Encode corpus clips into the codec's codebook tokens for language-model training."""
    try:
        settings = load_section(params, "tokenize")
        folders = corpus or [paths.CORPUS]
        if corpus is None and settings.include_augmented:
            folders.append(paths.AUGMENTED)
        index = tokenize(codec, folders, out, settings)
    except (ParamsError, ManifestError, TokenizeError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    frames = sum(entry.frames for entry in index)
    typer.echo(f"tokenized {len(index)} clips ({frames} frames) from {len(folders)} folder(s) into {out}")


if __name__ == "__main__":
    app()
