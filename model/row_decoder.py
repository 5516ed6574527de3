"""A KV cache whose rows start at different steps: the decoder under continuous batching.

`CachedDecoder` runs one batch from start to end: every row sits at the same position. A server wants
a request that arrives while others decode to join them at the next step instead of waiting for the
whole batch to finish. MusicGen's decoder makes that cheap: positions enter only as sinusoidal
embeddings added to the input, so self-attention never compares positions and a cache column need not
equal a position. All rows write the same column at each step; a row that joined at column c takes
position (column - c) and a mask hides the columns before c from it. Rows leave at any step.

The layers are model/decoder_step.py's, so the logits are the ones `CachedDecoder` gives a row decoded
alone (tests/model/test_row_decoder.py checks this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import MusicgenForCausalLM

from model.beat_grid import beat_grid_of
from model.decoder_step import cross_keys_values, decoder_layer, embed, lm_logits


class RowDecoder:
    """`add` rows with their text, `step` every row one position, `keep` the rows that go on."""

    def __init__(self, lm: MusicgenForCausalLM, max_positions: int):
        """`max_positions`: the longest any row runs (its window's columns); the cache holds two of that."""
        self.lm = lm
        self.decoder = lm.model.decoder
        config = lm.config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.max_positions = max_positions
        positions = self.decoder.embed_positions
        if max_positions > positions.weights.shape[0]:
            positions.make_weights(max_positions, positions.embedding_dim)
        self.rows = 0
        self.length = 0  # cache columns written; the next step writes column `length`
        self.first = torch.zeros(0, dtype=torch.long)  # the column each row started at
        self.tempi = torch.zeros(0)  # each row's beat grid tempo (0: none; model/beat_grid.py)
        self.cross: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.text_mask = torch.zeros(0, 0, dtype=torch.bool)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def add(self, text_states: torch.Tensor, text_mask: torch.Tensor, tempi: torch.Tensor | None = None) -> None:
        """New rows for text states [n, text_len, hidden] and mask [n, text_len]; they start at the next step.
        `tempi` [n]: each row's tempo for a decoder with a beat grid (0 or None: no grid)."""
        new = [cross_keys_values(layer, text_states) for layer in self.decoder.layers]
        mask = text_mask.bool()
        if self.rows:  # pad every row's text to the longest; the mask hides the padding
            width = max(mask.shape[1], self.text_mask.shape[1])
            new = [
                (
                    torch.cat([_pad_text(ok, width), _pad_text(nk, width)]),
                    torch.cat([_pad_text(ov, width), _pad_text(nv, width)]),
                )
                for (ok, ov), (nk, nv) in zip(self.cross, new, strict=True)
            ]
            mask = torch.cat([_pad_mask(self.text_mask, width), _pad_mask(mask, width)])
        self.cross, self.text_mask = new, mask
        added = text_states.shape[0]
        self._reserve(self.rows + added, text_states.dtype)
        self.first = torch.cat([self.first, torch.full((added,), self.length, dtype=torch.long)])
        self.tempi = torch.cat([self.tempi, torch.zeros(added) if tempi is None else tempi.float()])
        self.rows += added

    def keep(self, index: torch.Tensor) -> None:
        """Keep rows `index` (in that order); the others leave the batch."""
        self.first = self.first[index]
        self.tempi = self.tempi[index]
        self.cross = [(k[index], v[index]) for k, v in self.cross]
        self.text_mask = self.text_mask[index]
        for buffer in (*self.keys, *self.values):
            buffer[: len(index), :, : self.length] = buffer[index, :, : self.length]
        self.rows = len(index)
        if self.rows == 0:
            self.length = 0

    def positions(self) -> torch.Tensor:
        """The position each row's next token takes: how many steps it has taken."""
        return self.length - self.first

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per codebook for every row, tokens [rows, codebooks, 1]; logits [rows, codebooks, vocab]."""
        if tokens.shape[0] != self.rows or tokens.shape[2] != 1:
            raise ValueError(f"expected tokens [{self.rows}, codebooks, 1], got {list(tokens.shape)}")
        positions = self.positions()
        if int(positions.max()) >= self.max_positions:
            raise ValueError(f"a row would pass {self.max_positions} positions")
        if self.length == self.keys[0].shape[2]:
            self._make_room()
        column = self.length
        x = embed(self.lm, tokens, self.decoder.embed_positions.weights[positions][:, None, :])
        grid = beat_grid_of(self.lm)
        if grid is not None and bool((self.tempi > 0).any()):
            x = x + grid(self.tempi, positions, 1).to(x.dtype)
        # Rows that joined later must not see the columns written before they came; while every row
        # started at column 0 no mask is needed (and attention is faster without one).
        owned = None
        if bool((self.first > 0).any()):
            owned = (torch.arange(column + 1) >= self.first[:, None])[:, None, None, :]
        cross_mask = None if bool(self.text_mask.all()) else self.text_mask[:, None, None, :]
        for i, layer in enumerate(self.decoder.layers):
            x = decoder_layer(layer, x, self._store(i, column), self.cross[i], cross_mask, False, owned)
        self.length = column + 1
        return lm_logits(self.lm, x[:, -1]).float()

    def _store(self, i: int, column: int):
        def update(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = self.keys[i], self.values[i]
            keys[: self.rows, :, column : column + 1] = k
            values[: self.rows, :, column : column + 1] = v
            return keys[: self.rows, :, : column + 1], values[: self.rows, :, : column + 1]

        return update

    def _make_room(self) -> None:
        # Columns before the oldest row's start belong to rows that left: drop them. A row never runs past
        # max_positions, so twice that always leaves room after dropping.
        drop = int(self.first.min())
        if drop == 0:
            self._reserve(self.rows, self.keys[0].dtype, columns=2 * self.keys[0].shape[2])
            return
        for buffer in (*self.keys, *self.values):
            buffer[: self.rows, :, : self.length - drop] = buffer[: self.rows, :, drop : self.length].clone()
        self.first -= drop
        self.length -= drop

    def _reserve(self, rows: int, dtype: torch.dtype, columns: int | None = None) -> None:
        # Buffers grow by doubling (rows, columns) so joining rows rarely reallocates; what is written is kept.
        # Zeros, not empty memory: a masked column still enters attention as 0 x value, and garbage NaNs
        # there would poison the rows that do not own it.
        have_rows = self.keys[0].shape[0] if self.keys else 0
        have_columns = self.keys[0].shape[2] if self.keys else 0
        columns = columns or max(have_columns, min(self.max_positions, 64))
        columns = min(columns, 2 * self.max_positions)
        if rows <= have_rows and columns <= have_columns:
            return
        shape = (max(rows, 2 * have_rows), self.num_heads, columns, self.head_dim)
        for buffers in (self.keys, self.values):
            for i in range(len(self.decoder.layers)):
                fresh = torch.zeros(shape, dtype=dtype)
                if i < len(buffers):
                    fresh[: self.rows, :, : self.length] = buffers[i][: self.rows, :, : self.length]
                    buffers[i] = fresh
                else:
                    buffers.append(fresh)


def _pad_text(x: torch.Tensor, width: int) -> torch.Tensor:
    # [rows, heads, text_len, head_dim] -> text_len = width, zeros where padded (the mask hides them)
    return F.pad(x, (0, 0, 0, width - x.shape[2]))


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    # [rows, text_len] -> [rows, width], False where padded
    return F.pad(mask, (0, width - mask.shape[1]))
