"""The token loop of one context window: prefill a prompt, then one step per delayed column.

`sample_window` yields each frame as soon as its last codebook is decided (what streaming needs), each
prompt sampling from its own random generator; `beam_window` keeps `num_beams` hypotheses per prompt and
returns the best at the end. Both apply classifier-free guidance by running the unconditional text as
extra rows of the same batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from model.decoder_step import CachedDecoder
from model.delay_pattern import valid_positions
from model.generation_params import GenerationParams
from model.sampling import classifier_free_guidance, next_tokens


@dataclass
class Conditioning:
    """Projected text states [B, S, hidden] and mask [B, S]; unconditional rows are added for guidance.
    `tempi` [B] is each prompt's tempo for a decoder with a beat grid (0: none; model/beat_grid.py)."""

    states: torch.Tensor
    mask: torch.Tensor
    tempi: torch.Tensor | None = None

    def rows(self, guidance_scale: float, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.states.repeat_interleave(repeat, dim=0)
        mask = self.mask.repeat_interleave(repeat, dim=0)
        if guidance_scale == 1.0:
            return states, mask
        # The "null" condition: no text at all (zero states, fully masked), as MusicGen trains it.
        return torch.cat([states, torch.zeros_like(states)]), torch.cat([mask, torch.zeros_like(mask)])

    def row_tempi(self, guidance_scale: float, repeat: int = 1) -> torch.Tensor | None:
        """`tempi` for the rows `rows` returns: the unconditional ones get no beat grid either."""
        if self.tempi is None:
            return None
        tempi = self.tempi.repeat_interleave(repeat)
        return tempi if guidance_scale == 1.0 else torch.cat([tempi, torch.zeros_like(tempi)])


class _Window:
    """The delayed token grid of one window: which cells are free, which are fixed by a prompt."""

    def __init__(self, prefix: torch.Tensor, new_frames: int, special: int):
        batch, self.num_codebooks, self.prefix_frames = prefix.shape
        frames = self.prefix_frames + new_frames
        self.width = frames + self.num_codebooks
        self.valid = valid_positions(self.num_codebooks, self.width)
        self.grid = torch.full((batch, self.num_codebooks, self.width), special, dtype=torch.long)
        for k in range(self.num_codebooks):
            self.grid[:, k, k + 1 : k + 1 + self.prefix_frames] = prefix[:, k]

    def free(self, column: int) -> torch.Tensor:
        """Bool [K]: codebooks whose token at `column` the model decides (valid, past the prompt)."""
        frame = column - torch.arange(self.num_codebooks) - 1
        return self.valid[:, column] & (frame >= self.prefix_frames)

    @property
    def first_free_column(self) -> int:
        return self.prefix_frames + 1


def _guided(logits: torch.Tensor, batch_rows: int, guidance_scale: float) -> torch.Tensor:
    if guidance_scale == 1.0:
        return logits
    return classifier_free_guidance(logits[:batch_rows], logits[batch_rows:], guidance_scale)


def _feed(decoder: CachedDecoder, tokens: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    if guidance_scale != 1.0:
        tokens = torch.cat([tokens, tokens])
    return decoder.step(tokens)


def sample_window(
    decoder: CachedDecoder,
    text: Conditioning,
    prefix: torch.Tensor,
    new_frames: int,
    params: GenerationParams,
    generators: Sequence[torch.Generator] | None,
    first_frame: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield the window's new frames one at a time, [B, K] each, as soon as each is complete.
    `generators`: one per prompt (None: torch's global one); a prompt's conditional and unconditional rows
    are one row for sampling. `first_frame` is where the prefix starts in the whole audio (the beat grid's phase)."""
    special = decoder.lm.config.vocab_size
    window = _Window(prefix, new_frames, special)
    batch = prefix.shape[0]
    states, mask = text.rows(params.guidance_scale)
    tempi = text.row_tempi(params.guidance_scale)
    decoder.start(states, mask, capacity=window.width, tempi=tempi, first_frame=first_frame)
    first = window.first_free_column
    logits = _feed(decoder, window.grid[:, :, :first], params.guidance_scale)
    for column in range(first, window.width):
        if column > first:
            logits = _feed(decoder, window.grid[:, :, column - 1 : column], params.guidance_scale)
        guided = _guided(logits, batch, params.guidance_scale)
        tokens = next_tokens(guided, params.temperature, params.top_k, params.top_p, generators)
        free = window.free(column)
        window.grid[:, free, column] = tokens[:, free]
        frame = column - window.num_codebooks  # the frame whose last codebook sits at this column
        if frame >= window.prefix_frames:
            yield torch.stack([window.grid[:, k, frame + k + 1] for k in range(window.num_codebooks)], dim=1)


def _joint_top(logprobs: torch.Tensor, free: torch.Tensor, forced: torch.Tensor, n: int):
    """The n best joint choices over codebooks predicted independently.

    logprobs [R, K, V]; free [K]; forced [R, K] (the token of a codebook that is not free).
    Returns scores [R, n'] and tokens [R, n', K], n' <= n, best first.
    """
    rows = logprobs.shape[0]
    scores = torch.zeros(rows, 1)
    tokens = torch.zeros(rows, 1, 0, dtype=torch.long)
    for k in range(logprobs.shape[1]):
        if free[k]:
            top_scores, top_tokens = logprobs[:, k].topk(n, dim=-1)
        else:
            top_scores, top_tokens = torch.zeros(rows, 1), forced[:, k : k + 1]
        combined = (scores[:, :, None] + top_scores[:, None, :]).reshape(rows, -1)
        keep = min(n, combined.shape[1])
        scores, flat = combined.topk(keep, dim=-1)
        left, right = flat // top_scores.shape[1], flat % top_scores.shape[1]
        previous = tokens.gather(1, left[:, :, None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([previous, top_tokens.gather(1, right)[:, :, None]], dim=2)
    return scores, tokens


def beam_window(
    decoder: CachedDecoder,
    text: Conditioning,
    prefix: torch.Tensor,
    new_frames: int,
    params: GenerationParams,
    first_frame: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over the guided log-probabilities. Returns the best new frames [B, K, T] and their
    summed log-probability per prompt [B]. `first_frame` as in `sample_window`."""
    beams = params.num_beams
    special = decoder.lm.config.vocab_size
    batch, num_codebooks, _ = prefix.shape
    window = _Window(prefix.repeat_interleave(beams, dim=0), new_frames, special)
    states, mask = text.rows(params.guidance_scale, repeat=beams)
    tempi = text.row_tempi(params.guidance_scale, repeat=beams)
    decoder.start(states, mask, capacity=window.width, tempi=tempi, first_frame=first_frame)
    rows = batch * beams
    # Only the first beam is live at the start, so the first step does not pick one token n times.
    beam_scores = torch.full((batch, beams), float("-inf"))
    beam_scores[:, 0] = 0.0
    first = window.first_free_column
    logits = _feed(decoder, window.grid[:, :, :first], params.guidance_scale)
    for column in range(first, window.width):
        if column > first:
            logits = _feed(decoder, window.grid[:, :, column - 1 : column], params.guidance_scale)
        logprobs = _guided(logits, rows, params.guidance_scale).log_softmax(dim=-1)
        scores, tokens = _joint_top(logprobs, window.free(column), window.grid[:, :, column], beams)
        total = (beam_scores.reshape(rows, 1) + scores).reshape(batch, -1)
        beam_scores, flat = total.topk(beams, dim=-1)
        per_beam = scores.shape[1]
        source = (torch.arange(batch)[:, None] * beams + flat // per_beam).reshape(-1)
        choice = (flat % per_beam).reshape(-1)
        window.grid = window.grid[source]
        window.grid[:, :, column] = tokens[source, choice]
        decoder.reorder(torch.cat([source, source + rows]) if params.guidance_scale != 1.0 else source)
    best = window.grid.reshape(batch, beams, num_codebooks, -1)[:, 0]
    frames = torch.stack(
        [
            best[:, k, k + 1 + window.prefix_frames : k + 1 + window.prefix_frames + new_frames]
            for k in range(num_codebooks)
        ],
        dim=1,
    )
    return frames, beam_scores[:, 0]
