"""The torch modules that become the export's ONNX graphs, and what torch.onnx.export needs for each.

The text encoder and the codec decoder wrap transformers' modules; the decoders run the same per-layer code
as generation (model/decoder_step.py), taking the cache as inputs and returning it as outputs, with
attention as two matrix products (`matmul_attention`: what ONNX Runtime runs without copying the cache).
`graph_specs` pairs each module with its example inputs and Optimum's tensor and axis names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from components.export.codec_graph import traceable_codec
from components.export.shared_cache_graph import TRANSLATIONS, self_attention
from model.beat_grid import ONNX_INPUT as BEAT_GRID_INPUT
from model.beat_grid import beat_grid_of
from model.build import text_projection
from model.decoder_step import (
    cross_keys_values,
    decoder_layer,
    embed,
    lm_logits,
    matmul_attention,
    text_attention_and_mlp,
)
from model.onnx_backend import (
    CODEC_DECODER,
    DECODER,
    DECODER_WITH_PAST,
    SHARED_CACHE_DECODER,
    TEXT_ENCODER,
    past_names,
    present_names,
)


class TextEncoderGraph(torch.nn.Module):
    """text_encoder: input_ids, attention_mask -> last_hidden_state (raw, unprojected)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.encoder = model.text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A finite floor instead of a boolean mask: a row with no text at all then averages the values of
    # zeroed states (0, as torch's SDPA returns for such rows) instead of a softmax over -inf (NaN).
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class _DecoderGraph(torch.nn.Module):
    """The MusicGen decoder over an explicit cache, with model/decoder_step.py's per-layer code. A decoder
    with a beat grid (model/beat_grid.py) takes its features [B, n, 6] as one more input, `beat_grid`,
    which the cached steps take before the cache."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.lm = model.decoder
        self.projection = text_projection(model)
        self.num_codebooks = model.config.decoder.num_codebooks
        grid = beat_grid_of(model.decoder)
        self.grid = None if grid is None else grid.proj

    def _with_grid(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return x if features is None or self.grid is None else x + self.grid(features)

    def _grid_and_cache(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
        return (None, inputs) if self.grid is None else (inputs[0], inputs[1:])

    def _decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        past: list[tuple[torch.Tensor, torch.Tensor]] | None,
        features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens = ids.unflatten(0, (-1, self.num_codebooks))  # [B*K, n] -> [B, K, n]
        start = 0 if past is None else past[0][0].shape[2]
        decoder = self.lm.model.decoder
        # index_select, not a slice: a position past the table fails in onnxruntime instead of silently
        # giving a shorter embedding.
        positions = decoder.embed_positions.weights.index_select(0, torch.arange(tokens.shape[2]) + start)
        x = self._with_grid(embed(self.lm, tokens, positions), features)
        cross_mask = _additive_mask(mask, x.dtype)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(decoder.layers):

            def update(k: torch.Tensor, v: torch.Tensor, i: int = i) -> tuple[torch.Tensor, torch.Tensor]:
                if past is not None:
                    k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
                presents.extend([k, v])
                return k, v

            # causal only matters in the prefill; the cached step has one new position.
            x = decoder_layer(layer, x, update, cross[i], cross_mask, causal=past is None, attention=matmul_attention)
        return lm_logits(self.lm, x).flatten(0, 1), presents


class DecoderGraph(_DecoderGraph):
    """decoder_model: the prefill from an empty cache; projects and masks the raw text states itself."""

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_outputs: torch.Tensor,
        attention_mask: torch.Tensor,
        beat_grid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        states = self.projection(encoder_outputs) * attention_mask[..., None].to(encoder_outputs.dtype)
        cross = [cross_keys_values(layer, states) for layer in self.lm.model.decoder.layers]
        logits, presents = self._decode(decoder_input_ids, attention_mask, cross, None, beat_grid)
        out = [logits]
        for i, (k, v) in enumerate(cross):
            out += [presents[2 * i], presents[2 * i + 1], k, v]
        return tuple(out)


class DecoderWithPastGraph(_DecoderGraph):
    """decoder_with_past_model: one position more over the cache decoder_model (or itself) returned."""

    def forward(
        self, decoder_input_ids: torch.Tensor, attention_mask: torch.Tensor, *inputs: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        features, past_key_values = self._grid_and_cache(inputs)
        layers = range(len(past_key_values) // 4)
        past = [(past_key_values[4 * i], past_key_values[4 * i + 1]) for i in layers]
        cross = [(past_key_values[4 * i + 2], past_key_values[4 * i + 3]) for i in layers]
        logits, presents = self._decode(decoder_input_ids, attention_mask, cross, past, features)
        return (logits, *presents)


class DecoderWithSharedCacheGraph(_DecoderGraph):
    """decoder_with_shared_cache: decoder_with_past over cache buffers of a fixed capacity, appended to in
    place by ONNX Runtime's GroupQueryAttention (components/export/shared_cache_graph.py)."""

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        seqlens_k: torch.Tensor,
        total_sequence_length: torch.Tensor,
        *inputs: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        features, past_key_values = self._grid_and_cache(inputs)
        tokens = decoder_input_ids.unflatten(0, (-1, self.num_codebooks))
        decoder = self.lm.model.decoder
        position = (total_sequence_length.to(torch.int64) - 1).reshape(1)
        x = embed(self.lm, tokens, decoder.embed_positions.weights.index_select(0, position))
        x = self._with_grid(x, features)
        cross_mask = _additive_mask(attention_mask, x.dtype)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(decoder.layers):
            keys, values, *cross = past_key_values[4 * i : 4 * i + 4]
            x, keys, values = self_attention(layer, x, keys, values, seqlens_k, total_sequence_length)
            x = text_attention_and_mlp(layer, x, (cross[0], cross[1]), cross_mask, matmul_attention)
            presents += [keys, values]
        return (lm_logits(self.lm, x).flatten(0, 1), *presents)


class CodecDecoderGraph(torch.nn.Module):
    """encodec_decode: audio_codes [1, B, K, frames] -> audio_values [B, 1, samples]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.codec = model.audio_encoder

    def forward(self, audio_codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(audio_codes, [None]).audio_values


@dataclass
class GraphSpec:
    """What torch.onnx.export needs for one graph: the module, an example, names and dynamic axes."""

    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic_shapes: tuple[Any, ...]  # per positional argument: {axis: torch.export.Dim}
    renames: dict[str, str] = field(default_factory=dict)  # exporter's axis names -> Optimum's
    optimize: bool = True
    patch: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    translations: dict[Any, Callable[..., Any]] = field(default_factory=dict)  # custom op -> ONNX


def graph_specs(model: torch.nn.Module, example_ids: torch.Tensor, example_mask: torch.Tensor) -> dict[str, GraphSpec]:
    """The four graphs of Optimum's MusicGen layout and decoder_with_shared_cache; `example_*` are two
    tokenized prompts, one padded. A decoder with a beat grid gets its `beat_grid` input in the three
    decoder graphs."""
    config = model.config
    K, layers = config.decoder.num_codebooks, config.decoder.num_hidden_layers
    Dim = torch.export.Dim
    batch, text_len = Dim("total_batch_size"), Dim("encoder_sequence_length")
    rows = K * batch  # the exporter names it "4*total_batch_size"
    renames = {f"{K}*total_batch_size": "total_batch_size_x_num_codebooks"}
    # Examples avoid sizes 0 and 1, which torch.export would specialise.
    states = torch.randn(2, example_ids.shape[1], config.text_encoder.hidden_size)
    tokens = torch.randint(0, config.decoder.vocab_size + 1, (2 * K, 3))
    with torch.no_grad():
        past = DecoderGraph(model).eval()(tokens, states, example_mask)[1:]
    past_shapes, buffer_shapes, buffers = [], [], list(past)
    for i in range(layers):
        past_shapes += [{0: batch, 2: Dim("past_decoder_sequence_length")}] * 2
        past_shapes += [{0: batch, 2: text_len}] * 2
        buffer_shapes += [{0: batch, 2: Dim("cache_capacity")}] * 2 + [{0: batch, 2: text_len}] * 2
        for j in (4 * i, 4 * i + 1):  # the 3 prefilled positions in buffers of 5
            buffers[j] = torch.cat([buffers[j], torch.zeros_like(buffers[j][:, :, :2])], dim=2)
    filled = past[0].shape[2]
    text_batch = Dim("batch_size")
    length = Dim("decoder_sequence_length")
    # The grid's features (Optimum's graphs have no such input): [batch, n, 6] beside the tokens.
    gridded = beat_grid_of(model.decoder) is not None
    grid_name, grid_example, grid_shape, step_grid = (
        ([BEAT_GRID_INPUT], (torch.randn(2, 3, 6),), ({0: batch, 1: length},), [torch.randn(2, 1, 6)])
        if gridded
        else ([], (), (), [])
    )
    hop = round(config.audio_encoder.sampling_rate / config.audio_encoder.frame_rate)
    return {
        TEXT_ENCODER: GraphSpec(
            TextEncoderGraph(model),
            (example_ids, example_mask),
            ["input_ids", "attention_mask"],
            ["last_hidden_state"],
            ({0: text_batch, 1: text_len}, {0: text_batch, 1: text_len}),
        ),
        DECODER: GraphSpec(
            DecoderGraph(model),
            (tokens, states, example_mask, *grid_example),
            ["decoder_input_ids", "encoder_outputs", "attention_mask", *grid_name],
            ["logits", *present_names(layers)],
            ({0: rows, 1: length}, {0: batch, 1: text_len}, {0: batch, 1: text_len}, *grid_shape),
            renames,
        ),
        DECODER_WITH_PAST: GraphSpec(
            DecoderWithPastGraph(model),
            (tokens[:, -1:], example_mask, *step_grid, *past),
            ["decoder_input_ids", "attention_mask", *grid_name, *past_names(layers)],
            ["logits", *present_names(layers, with_encoder=False)],
            # *inputs (the grid, then the cache) is one argument
            ({0: rows}, {0: batch, 1: text_len}, tuple([{0: batch}] * gridded + past_shapes)),
            renames,
        ),
        SHARED_CACHE_DECODER: GraphSpec(
            DecoderWithSharedCacheGraph(model),
            (
                tokens[:, -1:],
                example_mask,
                torch.full((2,), filled, dtype=torch.int32),  # seqlens_k: total length - 1 per row
                torch.tensor(filled + 1, dtype=torch.int32),
                *step_grid,
                *buffers,
            ),
            [
                "decoder_input_ids",
                "attention_mask",
                "seqlens_k",
                "total_sequence_length",
                *grid_name,
                *past_names(layers),
            ],
            ["logits", *present_names(layers, with_encoder=False)],
            ({0: rows}, {0: batch, 1: text_len}, {0: batch}, None, tuple([{0: batch}] * gridded + buffer_shapes)),
            renames,
            translations=TRANSLATIONS,
        ),
        CODEC_DECODER: GraphSpec(
            CodecDecoderGraph(model),
            (torch.randint(0, config.audio_encoder.codebook_size, (1, 2, K, 10)),),
            ["audio_codes"],
            ["audio_values"],
            ({1: text_batch, 3: Dim("chunk_length")},),
            {f"{hop}*chunk_length": "audio_length"},
            # onnxscript's optimizer pins the LSTM's sequence length to the example's (its
            # MaterializeReshapeShape rule); onnxruntime optimises the graph when it loads it anyway.
            optimize=False,
            patch=traceable_codec,
        ),
    }
