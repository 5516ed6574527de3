"""Checkpoints of the codec stage, so a killed run continues where it stopped instead of starting over.

They live beside the output folder, in a hidden folder named by a key of everything the training depends
on (`.codec.checkpoint-<key>` beside `artifacts/codec`): the data and codec parameters, the codec's config
and the corpora's manifests and audio files. A run with other parameters or data has another key and never
sees a stale checkpoint (stale folders are deleted when such a run starts). The folder is not one of the
stage's DVC outputs: DVC deletes a stage's outputs before running it, and this folder must outlive a killed
run. It holds `last/` (`state.pt` and `meta.json`), replaced atomically, so a kill leaves the previous
checkpoint whole; once the trained codec is published the stage deletes the folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EncodecConfig

from components.codec import CodecError
from components.codec.data import AudioFile
from components.corpus.manifest import MANIFEST_FILE
from model.atomic_io import atomic_directory
from model.errors import first_line
from settings.params import CodecParams, DataParams, fingerprint

STATE_FILE, META_FILE = "state.pt", "meta.json"
LAST = "last"


def resume_key(
    corpus_dirs: list[Path], files: list[AudioFile], data: DataParams, params: CodecParams, config: EncodecConfig
) -> str:
    """A short hash that changes whenever the training would: parameters, codec config (a preset passed in
    code may differ from `codec.preset`'s), manifests, and each training file's length and size."""
    digest = hashlib.sha256(fingerprint(data, params).encode())
    digest.update(config.to_json_string(use_diff=False).encode())
    for folder in corpus_dirs:
        digest.update((folder / MANIFEST_FILE).read_bytes())
    listing = [(str(file.path), file.frames, file.path.stat().st_size) for file in files]
    digest.update(json.dumps(listing).encode())
    return digest.hexdigest()[:12]


class CodecCheckpoints:
    """The checkpoint folder of one output folder and one resume key."""

    def __init__(self, out_dir: Path, key: str) -> None:
        self.out_dir, self.key = Path(out_dir), key
        self.folder = self.out_dir.parent / f".{self.out_dir.name}.checkpoint-{key}"

    def drop_stale(self) -> None:
        """Delete the checkpoints of other keys (other parameters or data): they can never be resumed."""
        for stale in self.out_dir.parent.glob(f".{self.out_dir.name}.checkpoint-*"):
            if stale != self.folder:
                shutil.rmtree(stale, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def save(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Replace `last/` with this state only once it is completely on disk."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_directory(self.folder / LAST) as staging:
            torch.save(state, staging / STATE_FILE)
            (staging / META_FILE).write_text(json.dumps({**meta, "resume_key": self.key}, indent=2) + "\n")

    def load(self) -> dict[str, Any] | None:
        """The state of `last/`, or None when there is none; CodecError when it cannot be read."""
        last = self.folder / LAST
        self._recover(last)
        if not last.is_dir():
            return None
        try:
            return torch.load(last / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as error:  # a boundary: any unreadable file is a corrupt checkpoint
            raise CodecError(
                f"codec checkpoint {last} is unreadable ({first_line(error)}); delete it or rerun with --no-resume"
            ) from None

    def _recover(self, last: Path) -> None:
        # A kill inside atomic_directory's swap can leave the previous `last` moved aside as `.last.old-<pid>`
        # (whole) and a staging folder `.last.<random>` (maybe part-written): keep the whole one, drop the rest.
        if not last.is_dir():
            for old in sorted(self.folder.glob(f".{LAST}.old-*")):
                old.rename(last)
                break
        for leftover in self.folder.glob(f".{LAST}.*"):
            shutil.rmtree(leftover, ignore_errors=True)


def rng_states(sampler: np.random.Generator) -> dict[str, Any]:
    """Every random stream a step may draw from: the crop sampler's, torch's (init, dead-code replacement),
    and numpy's and Python's global ones (nothing here draws from them, but a library might)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # weights_only loading takes no arrays
    return {
        "sampler": sampler.bit_generator.state,
        "torch": torch.get_rng_state(),
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def restore_rng(states: dict[str, Any], sampler: np.random.Generator) -> None:
    sampler.bit_generator.state = states["sampler"]
    torch.set_rng_state(states["torch"])
    numpy_state = copy.deepcopy(states["numpy"])
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    random.setstate(states["python"])
