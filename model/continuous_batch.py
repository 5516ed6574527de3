"""Continuous batching: requests join a running generation between decoding steps and leave when done.

Batching only at the start makes a request that arrives a moment late wait for the whole running batch
(seconds of audio) before its first chunk. Here each request is a row with its own delayed-pattern
window, its own place in that window and its own streaming codec decoder; one decoding step advances
every row by one column (model/row_decoder.py lets rows sit at different positions). A row joins at the
next step, leaves the step its last frame is decided or the step its caller removes it, and its audio
comes out in chunks as `StreamingCodecDecoder` makes them.

Rows share the sampling settings (guidance, temperature, top-k, top-p: `join_key`); durations and seeds
may differ. Each row samples from its own random generator, seeded with its request's seed, so a row draws
what it would draw alone: a request, whether it starts the batch or joins it mid-way, makes the tokens
`MusicGenerator.generate([prompt], params)` makes with its seed (up to the ~1e-6 by which batched logits
differ from a lone row's, which moves a draw only when it lands that close to the edge between two tokens).
A request must fit one context window (long-form generation restarts windows from a prefix; `fits` says
which requests can join).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from model.delay_pattern import valid_positions
from model.generation_params import GenerationParams
from model.generator import BaseMusicGenerator
from model.sampling import classifier_free_guidance, next_tokens, row_generators
from model.streaming import StreamingCodecDecoder


def join_key(params: GenerationParams) -> tuple:
    """Requests with equal keys can share a running batch: everything that sampling reads."""
    return (params.guidance_scale, params.temperature, params.top_k, params.top_p)


class RowRequest(NamedTuple):
    """One request for a row: who gets its audio, its prompt, seconds of audio, and the seed it samples with."""

    handle: Hashable
    prompt: str
    duration: float
    seed: int


@dataclass(eq=False)
class _Row:
    """One request's delayed token grid [K, frames + K] (numpy: per-row bookkeeping runs every step, and
    small torch ops cost more than the numpy ones), the cells the model decides, and its audio so far."""

    handle: Hashable
    grid: np.ndarray
    valid: np.ndarray
    codec: StreamingCodecDecoder
    samples_left: int
    random: torch.Generator  # this row's own: its draws do not depend on the other rows
    column: int = 1  # the next column to decide (column 0 holds the start tokens)


@dataclass
class Emitted:
    """What one step gave a row: an audio chunk [samples] (or None yet), and whether the row is finished."""

    handle: Hashable
    chunk: np.ndarray | None
    done: bool


class ContinuousBatch:
    """Rows of one generator that decode together; `add` and `remove` between `step`s. `params` gives the
    sampling settings every row shares (its duration and seed are not read: each row brings its own)."""

    def __init__(self, generator: BaseMusicGenerator, params: GenerationParams, **chunking: int):
        self.generator = generator
        self.params = params
        self.window_frames = generator.frames_for(generator.card.context_seconds)
        self.decoder = generator.row_decoder(self.window_frames + generator.num_codebooks)
        self.chunking = chunking
        self.guided = params.guidance_scale != 1.0
        self.rows: list[_Row] = []
        self._codebooks = np.arange(generator.num_codebooks)

    @staticmethod
    def fits(generator: BaseMusicGenerator, params: GenerationParams) -> bool:
        """Whether a request can run here: a backend with a row decoder, sampling (no beams), and no longer
        than one context window."""
        if not generator.joins_running_batches:
            return False
        context = generator.frames_for(generator.card.context_seconds)
        return params.num_beams == 1 and generator.frames_for(params.duration) <= context

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def add(self, requests: list[RowRequest]) -> None:
        """New rows for (handle, prompt, duration, seed) requests; they take their first step with the next
        `step()`.

        The prompts are encoded in one call: a text encoder call per request would delay every first chunk."""
        generator = self.generator
        for request in requests:
            if generator.frames_for(request.duration) > self.window_frames:
                raise ValueError(
                    f"{request.duration} s is longer than one context window; generate it in windows instead"
                )
        text = generator.encode_text([request.prompt for request in requests])
        states, mask = text.rows(self.params.guidance_scale)  # [conditional rows, unconditional rows]
        tempi = text.row_tempi(self.params.guidance_scale)
        if self.guided:  # pair them up: each request's two rows stay adjacent as rows come and go
            order = torch.arange(2 * len(requests)).view(2, -1).t().flatten()
            states, mask = states[order], mask[order]
            tempi = None if tempi is None else tempi[order]
        self.decoder.add(states, mask, tempi)
        special, codebooks = self.decoder.lm.config.vocab_size, generator.num_codebooks
        randoms = row_generators([request.seed for request in requests])
        for (handle, _, duration, _), random in zip(requests, randoms, strict=True):
            width = generator.frames_for(duration) + codebooks
            grid = np.full((codebooks, width), special, dtype=np.int64)
            codec = StreamingCodecDecoder(generator.decode_audio, generator.hop_length, **self.chunking)
            samples = round(duration * generator.sample_rate)
            valid = valid_positions(codebooks, width).numpy()
            self.rows.append(_Row(handle, grid, valid, codec, samples, random))

    @torch.inference_mode()
    def remove(self, handle: Hashable) -> None:
        """Drop a row (its caller went away); the others go on from the next step."""
        self._keep([row for row in self.rows if row.handle != handle])

    @torch.inference_mode()
    def step(self) -> list[Emitted]:
        """Decide one more column of every row; what each row's audio gained."""
        if not self.rows:
            return []
        fed = torch.from_numpy(np.stack([row.grid[:, row.column - 1 : row.column] for row in self.rows]))
        logits = self.decoder.step(fed.repeat_interleave(2, dim=0) if self.guided else fed)
        if self.guided:
            logits = classifier_free_guidance(logits[0::2], logits[1::2], self.params.guidance_scale)
        p = self.params
        tokens = next_tokens(logits, p.temperature, p.top_k, p.top_p, [row.random for row in self.rows]).numpy()
        chunks = self._decode([(row, self._decide(row, tokens[i])) for i, row in enumerate(self.rows)])
        emitted = []
        for row in self.rows:
            chunk, done = chunks.get(row), row.column == row.grid.shape[1]
            if done and (rest := row.codec.flush()) is not None:
                chunk = rest if chunk is None else np.concatenate([chunk, rest], axis=1)
            if chunk is not None:
                chunk = chunk[0, : row.samples_left]
                row.samples_left -= chunk.shape[0]
            emitted.append(Emitted(row.handle, chunk, done))
        finished = {e.handle for e in emitted if e.done}
        if finished:
            self._keep([row for row in self.rows if row.handle not in finished])
        return emitted

    def _decide(self, row: _Row, tokens: np.ndarray) -> int | None:
        """Write the row's decided tokens; the frame its next chunk is due up to, if one is now due."""
        column = row.column
        free = row.valid[:, column]
        row.grid[free, column] = tokens[free]
        row.column += 1
        frame = column - row.grid.shape[0]  # the frame whose last codebook sits at this column
        if frame < 0:
            return None
        codes = row.grid[self._codebooks, frame + self._codebooks + 1]
        return row.codec.add(torch.from_numpy(codes)[None, :, None])

    def _decode(self, due: list[tuple[_Row, int | None]]) -> dict[_Row, np.ndarray]:
        """The chunks now due, [1, samples] each; rows whose codec windows are equally long decode in one
        call (rows that joined together stay in step: one call instead of one per row)."""
        groups: dict[int, list[tuple[_Row, int]]] = {}
        for row, end_frame in due:
            if end_frame is not None:
                groups.setdefault(row.codec.window().shape[2], []).append((row, end_frame))
        chunks = {}
        for group in groups.values():
            audio = self.generator.decode_audio(torch.cat([row.codec.window() for row, _ in group]))
            for i, (row, end_frame) in enumerate(group):
                chunks[row] = row.codec.finish(audio[i : i + 1], end_frame)
        return chunks

    def _keep(self, rows: list[_Row]) -> None:
        index = [self.rows.index(row) for row in rows]
        if self.guided:
            index = [r for i in index for r in (2 * i, 2 * i + 1)]
        self.decoder.keep(torch.tensor(index, dtype=torch.long))
        self.rows = rows
