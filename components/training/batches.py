"""Batches of token crops with their captions, in an order that depends only on (seed, step).

The order of clips in an epoch comes from torch's `DistributedSampler` (seeded, reshuffled per epoch):
with W processes each takes every W-th clip of the same permutation, so the union of their batches
at a step is exactly the batch one process would take, and a resumed run finds its place from the
step number alone. Crop positions and condition dropout are drawn per (seed, step, clip), not from a
running generator, for the same reasons.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from components.tokenize import TokenizedClip


def _rng(*names: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, names)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Batch:
    codes: torch.Tensor  # [B, K, frames] int64
    clips: torch.Tensor  # [B] indices into the split's clip list (for the cached text states)
    keep_text: torch.Tensor  # [B] bool: False where the caption is dropped (the null condition)
    starts: torch.Tensor  # [B] the frame of its clip each crop starts at (the beat grid's phase)
    keep_grid: torch.Tensor  # [B] bool: False where the beat grid is dropped (always with the caption)


class TokenCrops:
    """One split's clips: fixed-length crops of their codes."""

    def __init__(self, codes: np.ndarray, clips: list[TokenizedClip], frames: int):
        usable = [clip for clip in clips if clip.frames >= frames]
        if not usable:
            raise ValueError(f"no clip has the {frames} frames a training crop needs")
        self.codes, self.clips, self.frames = codes, usable, frames

    def __len__(self) -> int:
        return len(self.clips)

    def crop(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random crop of clip `index` and the frame of the clip it starts at."""
        clip = self.clips[index]
        start = int(rng.integers(0, clip.frames - self.frames + 1))
        return np.asarray(self.codes[:, clip.offset + start : clip.offset + start + self.frames], dtype=np.int64), start

    def steps_per_epoch(self, global_batch: int) -> int:
        return len(self) // global_batch

    def training_batch(
        self,
        step: int,
        global_batch: int,
        rank: int,
        world: int,
        seed: int,
        condition_dropout: float,
        grid_dropout: float = 0.0,
    ) -> Batch:
        """This process's share (global_batch / world clips) of the global batch at `step`."""
        per_epoch = self.steps_per_epoch(global_batch)
        if per_epoch == 0:
            raise ValueError(f"{len(self)} training clips cannot fill a batch of {global_batch}")
        epoch, position = divmod(step, per_epoch)
        sampler = DistributedSampler(self, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        local = global_batch // world
        indices = list(sampler)[position * local : (position + 1) * local]
        crops, starts, keep, keep_grid = [], [], [], []
        for index in indices:
            rng = _rng(seed, "train", step, index)
            crop, start = self.crop(index, rng)
            crops.append(crop)
            starts.append(start)
            keep.append(rng.random() >= condition_dropout)
            # Drawn after the caption's draw, so a run without a grid sees the same crops and captions.
            keep_grid.append(keep[-1] and rng.random() >= grid_dropout)
        return Batch(
            torch.from_numpy(np.stack(crops)),
            torch.tensor(indices),
            torch.tensor(keep),
            torch.tensor(starts),
            torch.tensor(keep_grid),
        )

    def validation_batches(self, batch_size: int, count: int, seed: int) -> list[Batch]:
        """The same crops every time: validation losses are comparable across evaluations and runs."""
        batches = []
        order = list(range(len(self)))
        for number in range(min(count, max(1, len(self) // batch_size))):
            indices = order[number * batch_size : (number + 1) * batch_size]
            crops, starts = zip(*(self.crop(i, _rng(seed, "valid", i)) for i in indices), strict=True)
            keep = torch.ones(len(indices), dtype=torch.bool)
            batch = Batch(torch.from_numpy(np.stack(crops)), torch.tensor(indices), keep, torch.tensor(starts), keep)
            batches.append(batch)
        return batches
