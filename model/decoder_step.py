"""KV-cached decoding over a MusicGen decoder's own weights: the hot loop of generation.

transformers' `MusicgenDecoder.forward` rebuilds masks and walks cache objects on every call; for a
small decoder on a CPU that bookkeeping costs more than the arithmetic. This module runs the same
layers (pre-norm self-attention, cross-attention to the text, GELU MLP; see transformers'
`MusicgenDecoderLayer`) with a preallocated cache and the cross-attention keys and values computed
once. It reads the module's parameters directly, so it always sees the current weights.

The per-layer math (`embed`, `decoder_layer`, `cross_keys_values`, `lm_logits`) is written once here
and shared with the ONNX export (`components/export/`), whose graphs take the cache as inputs and
return it as outputs instead of writing into preallocated buffers.
`tests/model/test_decoder_step.py` checks the logits against transformers' forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import MusicgenForCausalLM

from model.beat_grid import grid_embedding

# Takes the new positions' keys and values [rows, heads, n, head_dim]; returns all keys and values
# the queries attend to (the cached ones followed by the new ones).
CacheUpdate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# `F.scaled_dot_product_attention`'s signature (query, key, value, attn_mask, is_causal).
Attention = Callable[..., torch.Tensor]


class DecoderSession(Protocol):
    """What model/decoding.py's loops drive: `CachedDecoder` here, `OnnxDecoder` over exported graphs."""

    lm: Any  # `lm.config.vocab_size` is the special (pad/start) token

    def start(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None,
        capacity: int,
        tempi: torch.Tensor | None = None,
        first_frame: int = 0,
    ) -> None: ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    # F.linear skips nn.Module.__call__'s hook machinery, which is measurable per token here.
    return F.linear(x, layer.weight, layer.bias)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # [rows, n, hidden] -> [rows, heads, n, head_dim]; unflatten needs no concrete sizes, so the
    # same code traces with symbolic batch and sequence lengths for ONNX.
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


def matmul_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` written as its two matrix products, for the ONNX export.

    torch's exporter decomposes SDPA into a reshape-transpose-reshape of the keys before the product,
    which ONNX Runtime runs as a copy of the whole cache every step; `key.transpose(-1, -2)` feeding a
    MatMul is fused by ONNX Runtime into one FusedMatMul (transB, the scale as alpha) with no copy.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    if is_causal:
        n = query.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.matmul(scores.softmax(-1), value)


def embed(lm: MusicgenForCausalLM, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Hidden states [rows, n, hidden] of tokens [rows, codebooks, n] at sinusoidal `positions` [n, hidden]."""
    decoder = lm.model.decoder
    return sum(decoder.embed_tokens[k](tokens[:, k]) for k in range(tokens.shape[1])) + positions


def cross_keys_values(layer: torch.nn.Module, text_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's cross-attention keys and values [rows, heads, text_len, head_dim] of the projected text."""
    attn = layer.encoder_attn
    keys = _split_heads(_linear(text_states, attn.k_proj), attn.num_heads)
    values = _split_heads(_linear(text_states, attn.v_proj), attn.num_heads)
    return keys, values


def decoder_layer(
    layer: torch.nn.Module,
    x: torch.Tensor,
    cache: CacheUpdate,
    cross: tuple[torch.Tensor, torch.Tensor],
    cross_mask: torch.Tensor | None,
    causal: bool,
    self_mask: torch.Tensor | None = None,
    attention: Attention = F.scaled_dot_product_attention,
) -> torch.Tensor:
    """One `MusicgenDecoderLayer` on x [rows, n, hidden]: self-attention over the cache, cross-attention
    to the text (`cross_mask`: boolean or additive, broadcastable to [rows, heads, n, text_len]), MLP.

    `causal` masks the new positions among themselves: needed when n > 1, which only a prefill from an
    empty cache does (so the usual top-left causal mask is the right one). `self_mask` (boolean,
    broadcastable to [rows, heads, n, cached]) hides cache columns a row does not own: rows that joined a
    running batch later (model/row_decoder.py). It cannot be combined with `causal`. `attention` is
    SDPA, or `matmul_attention` in the ONNX export.
    """
    attn, heads = layer.self_attn, layer.self_attn.num_heads
    h = layer.self_attn_layer_norm(x)
    q = _split_heads(_linear(h, attn.q_proj), heads)
    keys, values = cache(_split_heads(_linear(h, attn.k_proj), heads), _split_heads(_linear(h, attn.v_proj), heads))
    o = attention(q, keys, values, attn_mask=self_mask, is_causal=causal)
    x = x + _linear(_merge_heads(o), attn.out_proj)
    return text_attention_and_mlp(layer, x, cross, cross_mask, attention)


def text_attention_and_mlp(
    layer: torch.nn.Module,
    x: torch.Tensor,
    cross: tuple[torch.Tensor, torch.Tensor],
    cross_mask: torch.Tensor | None,
    attention: Attention = F.scaled_dot_product_attention,
) -> torch.Tensor:
    """The rest of a decoder layer after its self-attention: cross-attention to the text, then the MLP."""
    attn, heads = layer.encoder_attn, layer.encoder_attn.num_heads
    h = layer.encoder_attn_layer_norm(x)
    q = _split_heads(_linear(h, attn.q_proj), heads)
    o = attention(q, cross[0], cross[1], attn_mask=cross_mask)
    x = x + _linear(_merge_heads(o), attn.out_proj)

    h = layer.final_layer_norm(x)
    return x + _linear(layer.activation_fn(_linear(h, layer.fc1)), layer.fc2)


def lm_logits(lm: MusicgenForCausalLM, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [rows, codebooks, ..., vocab] of the last layer's hidden states [rows, ..., hidden]."""
    last = lm.model.decoder.layer_norm(hidden)
    return torch.stack([_linear(last, head) for head in lm.lm_heads], dim=1)


class CachedDecoder:
    """One decoding session: `start` with the text, then `step` frames of tokens in order."""

    def __init__(self, lm: MusicgenForCausalLM):
        self.lm = lm
        self.decoder = lm.model.decoder
        config = lm.config
        self.num_codebooks = config.num_codebooks
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.position = 0
        self.grid: torch.Tensor | None = None

    def start(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None,
        capacity: int,
        tempi: torch.Tensor | None = None,
        first_frame: int = 0,
    ) -> None:
        """Reset the cache for `text_states` [rows, text_len, hidden] and up to `capacity` positions.
        With a beat grid on the decoder, `tempi` [rows] places position 0 at frame `first_frame` of the
        beat of each row's tempo (model/beat_grid.py)."""
        rows = text_states.shape[0]
        grid = grid_embedding(self.lm, tempi, first_frame, capacity)
        self.grid = None if grid is None else grid.to(text_states.dtype)
        self.rows, self.position, self.capacity = rows, 0, capacity
        self.cross = [cross_keys_values(layer, text_states) for layer in self.decoder.layers]
        # A boolean mask: rows with no text at all (unconditional) then attend to nothing, as in
        # transformers' SDPA path. No padding at all needs no mask (and is faster).
        if text_mask is None or bool(text_mask.all()):
            self.cross_mask = None
        else:
            self.cross_mask = text_mask.bool()[:, None, None, :]
        dtype = text_states.dtype
        self.keys = [torch.empty(rows, self.num_heads, capacity, self.head_dim, dtype=dtype) for _ in self.cross]
        self.values = [torch.empty_like(k) for k in self.keys]
        positions = self.decoder.embed_positions
        if capacity > positions.weights.shape[0]:
            positions.make_weights(capacity, positions.embedding_dim)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep cache rows `index` (beam search): row i becomes the old row index[i], text included."""
        p = self.position
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[:, :, :p] = keys.index_select(0, index)[:, :, :p]
            values[:, :, :p] = values.index_select(0, index)[:, :, :p]
        self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]
        if self.cross_mask is not None:
            self.cross_mask = self.cross_mask.index_select(0, index)
        if self.grid is not None:
            self.grid = self.grid.index_select(0, index)

    def _store(self, i: int, start: int, end: int) -> CacheUpdate:
        def update(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            return self.keys[i][:, :, :end], self.values[i][:, :, :end]

        return update

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [rows, codebooks, n] at the next n positions; logits [rows, codebooks, vocab] of the
        last position.

        n > 1 only from an empty cache (a prompt prefill), where a causal mask is all that is needed.
        """
        n = tokens.shape[2]
        start, end = self.position, self.position + n
        if n > 1 and start > 0:
            raise ValueError("several tokens at once only from an empty cache")
        if end > self.capacity:
            raise ValueError(f"cache holds {self.capacity} positions, asked for {end}")
        x = embed(self.lm, tokens, self.decoder.embed_positions.weights[start:end])
        if self.grid is not None:
            x = x + self.grid[:, start:end]
        for i, layer in enumerate(self.decoder.layers):
            x = decoder_layer(layer, x, self._store(i, start, end), self.cross[i], self.cross_mask, causal=n > 1)
        self.position = end
        return lm_logits(self.lm, x[:, -1]).float()
