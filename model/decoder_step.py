"""KV-cached decoding over a MusicGen decoder's own weights: the hot loop of generation.

transformers' `MusicgenDecoder.forward` rebuilds masks and walks cache objects on every call; for a
small decoder on a CPU that bookkeeping costs more than the arithmetic. This module runs the same
layers (pre-norm self-attention, cross-attention to the text, GELU MLP; see transformers'
`MusicgenDecoderLayer`) with a preallocated cache and the cross-attention keys and values computed
once. It reads the module's parameters directly, so it always sees the current weights.
`tests/test_decoder_step.py` checks its logits against transformers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import MusicgenForCausalLM


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    # F.linear skips nn.Module.__call__'s hook machinery, which is measurable per token here.
    return F.linear(x, layer.weight, layer.bias)


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

    def start(self, text_states: torch.Tensor, text_mask: torch.Tensor | None, capacity: int) -> None:
        """Reset the cache for `text_states` [rows, text_len, hidden] and up to `capacity` positions."""
        rows = text_states.shape[0]
        self.rows, self.position, self.capacity = rows, 0, capacity
        shape = (rows, -1, self.num_heads, self.head_dim)
        self.cross = [
            (
                layer.encoder_attn.k_proj(text_states).view(shape).transpose(1, 2),
                layer.encoder_attn.v_proj(text_states).view(shape).transpose(1, 2),
            )
            for layer in self.decoder.layers
        ]
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

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [rows, codebooks, n] at the next n positions; logits [rows, codebooks, vocab] of the
        last position.

        n > 1 only from an empty cache (a prompt prefill), where a causal mask is all that is needed.
        """
        rows, _, n = tokens.shape
        start, end = self.position, self.position + n
        if n > 1 and start > 0:
            raise ValueError("several tokens at once only from an empty cache")
        if end > self.capacity:
            raise ValueError(f"cache holds {self.capacity} positions, asked for {end}")
        dec = self.decoder
        x = sum(dec.embed_tokens[k](tokens[:, k]) for k in range(self.num_codebooks))
        x = x + dec.embed_positions.weights[start:end]
        heads = (rows, n, self.num_heads, self.head_dim)
        for i, layer in enumerate(dec.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _linear(h, attn.q_proj).view(heads).transpose(1, 2)
            self.keys[i][:, :, start:end] = _linear(h, attn.k_proj).view(heads).transpose(1, 2)
            self.values[i][:, :, start:end] = _linear(h, attn.v_proj).view(heads).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, self.keys[i][:, :, :end], self.values[i][:, :, :end], is_causal=n > 1)
            x = x + _linear(o.transpose(1, 2).reshape(rows, n, -1), attn.out_proj)

            attn = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _linear(h, attn.q_proj).view(heads).transpose(1, 2)
            keys, values = self.cross[i]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=self.cross_mask)
            x = x + _linear(o.transpose(1, 2).reshape(rows, n, -1), attn.out_proj)

            h = layer.final_layer_norm(x)
            x = x + _linear(layer.activation_fn(_linear(h, layer.fc1)), layer.fc2)
        last = dec.layer_norm(x[:, -1])
        self.position = end
        return torch.stack([_linear(last, head) for head in self.lm.lm_heads], dim=1).float()
