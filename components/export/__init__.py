"""Stage `export`: a trained MusicGen as ONNX graphs in Hugging Face Optimum's layout, parity-checked.

    python -m components.export --params params.yaml --model artifacts/model --out artifacts/onnx

Output folder (published whole or not at all):

    text_encoder.onnx, decoder_model.onnx, decoder_with_past_model.onnx, encodec_decode.onnx
        Optimum's MusicGen file, tensor and axis names; model/onnx_backend.py lists every input and output.
        decoder logits are [total_batch_size_x_num_codebooks, decoder_sequence_length, vocab], as
        transformers returns them (row b*K + k is codebook k of batch row b).
    beat_grid.json
        only for a decoder with a beat grid (train.beat_grid): its decoder graphs take the grid's
        features as one more input, `beat_grid` [total_batch_size, decoder_sequence_length, 6]
        (model/beat_grid.py), which the generators compute from each prompt's tempo.
    decoder_with_shared_cache.onnx
        ours: the cached step over fixed-capacity cache buffers that ONNX Runtime appends to in place
        (components/export/shared_cache_graph.py); the ONNX Runtime backend's cached step where it can bind them.
    config.json, generation_config.json, tokenizer and processor files, musicops.json (the model card)
        so the folder generates on its own (`OnnxMusicGenerator.load(folder)`), with no torch weights.
    export.json    opset, per-graph parity against torch, file sizes, source model and its data version.
    int8/          (export.int8) the same names and files: text encoder and decoders with dynamically
                   quantized weights (QInt8, MatMul/Gemm), encodec_decode kept fp32; its export.json
                   reports the measured INT8-vs-torch differences.

Optimum-onnx does not install beside this transformers, so the graphs are written here: the text
encoder and the decoders with torch's dynamo exporter; the decoders run the same per-layer code as
generation (model/decoder_step.py), taking the cache as inputs and returning it as outputs, with
attention as two matrix products (`matmul_attention`: what ONNX Runtime runs without copying the
cache). Parity runs every graph in ONNX Runtime on real inputs (tokenized prompts of different lengths
with padding, a guided batch whose unconditional rows are zero states with a zero mask as
model/decoding.py builds them, codes from a short generation) against transformers' own modules; a
breach raises ParityError naming the graph and nothing is published. Exit status of the CLI: 2 for bad
input, 1 for a failed parity check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from components.export.codec_graph import traceable_codec
from components.export.shared_cache_graph import TRANSLATIONS, self_attention
from components.params import ExportParams, ParamsError, load_section
from model.atomic_io import atomic_directory
from model.beat_grid import ONNX_INPUT as BEAT_GRID_INPUT
from model.beat_grid import beat_grid_of, grid_features, grid_in_forward, prompt_tempi, write_onnx_note
from model.build import text_projection
from model.checkpoint import load_model
from model.decoder_step import (
    cross_keys_values,
    decoder_layer,
    embed,
    lm_logits,
    matmul_attention,
    text_attention_and_mlp,
)
from model.decoding import Conditioning
from model.delay_pattern import build_delay_pattern
from model.errors import ModelInputError, first_line
from model.generator import MusicGenerator
from model.onnx_backend import (
    CODEC_DECODER,
    DECODER,
    DECODER_WITH_PAST,
    EXPORTED_GRAPHS,
    SHARED_CACHE_DECODER,
    TEXT_ENCODER,
    GraphRunner,
    OrtRunner,
    grown_to_capacity,
    past_names,
    present_names,
)
from model.params import GenerationParams

EXPORT_FILE, INT8_DIR = "export.json", "int8"
CACHED_STEPS = (DECODER_WITH_PAST, SHARED_CACHE_DECODER)  # checked after a decoder_model prefill
GUIDANCE = 3.0  # the guided batch of the parity check: prompts, then as many unconditional rows
PROMPTS = [  # with and without a tempo: a beat grid's rows get features or zeros
    "jazz",
    "upbeat electronic dance track at 128 BPM with a punchy kick drum and bright synth leads",
    "slow folk ballad with fiddle",
    "ambient pads over soft piano, calm and spacious, with distant rain",
]
# Weights and their index files are what the export replaces; every other file of the model folder
# (configs, tokenizer, processor, card) is copied so the export generates on its own.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")


class ExportError(ValueError):
    """The model cannot be exported; the message names the graph and why."""


class ParityError(ExportError):
    """An exported graph's outputs differ from torch's by more than the stated bound."""


@dataclass
class GraphParity:
    """max |onnxruntime - torch| over the parity inputs, and that relative to max(1, max |torch|)."""

    max_abs_diff: float
    scale: float
    relative: float
    bound: float
    passed: bool


@dataclass
class ExportReport:
    """What `export` wrote and measured (export.json holds the same); `int8_*` are None without INT8."""

    out_dir: Path
    opset: int
    parity: dict[str, GraphParity]
    sizes: dict[str, int]
    int8_parity: dict[str, GraphParity] | None = None
    int8_sizes: dict[str, int] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- the graphs as torch modules -----------------------------------------------------------------


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


# -- writing a graph -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_logger(logger: logging.Logger, level: int) -> Iterator[None]:
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter warns about optional torchvision ops and tracing details that do not apply here.
    with (
        _quiet_logger(logging.getLogger("torch.onnx._internal.exporter._registration"), logging.ERROR),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def _rename_dims(path: Path, names: dict[str, str], large: bool) -> None:
    """Give derived axes Optimum's names (the exporter writes e.g. '4*total_batch_size')."""
    import onnx

    proto = onnx.load(str(path))
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    for stale in path.parent.glob(f"{path.name}.data"):
        stale.unlink()
    onnx.save(proto, str(path), save_as_external_data=large, location=f"{path.name}.data")


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


def export_graph(graph: str, spec: GraphSpec, path: Path, opset: int) -> None:
    """Write one graph with torch's dynamo exporter, axes named as Optimum names them."""
    module = spec.module.eval()
    # Graphs past 2 GB cannot be one protobuf: their weights go to a .data file beside them.
    large = sum(t.numel() * t.element_size() for t in module.state_dict().values()) > 1_500_000_000
    try:
        with _quiet_exporter(), spec.patch(), torch.no_grad():
            program = torch.onnx.export(
                module,
                spec.example,
                dynamo=True,
                opset_version=opset,
                optimize=spec.optimize,
                verbose=False,
                input_names=spec.inputs,
                output_names=spec.outputs,
                dynamic_shapes=spec.dynamic_shapes,
                custom_translation_table=spec.translations or None,
            )
            program.save(str(path), external_data=large)
    except Exception as error:  # a boundary: the exporter's failures are long; name the graph first
        reason = first_line(error)
        raise ExportError(f"exporting {graph} failed: {reason}") from error
    finally:
        module.eval()  # the exporter can leave modules in training mode
    _rename_dims(path, spec.renames, large)


# -- parity ----------------------------------------------------------------------------------------


@dataclass
class ParityInputs:
    """Real inputs and transformers' outputs for them, computed once per export."""

    input_ids: np.ndarray  # [B, S] prompts of different lengths, padded, the last one empty
    encoder_mask: np.ndarray  # the tokenizer's mask
    mask: np.ndarray  # the conditioning mask: the empty prompt's row all zero
    text_states: np.ndarray  # transformers' text encoder output, zero where `mask` is
    rows_states: np.ndarray  # the guided batch [2B, S, text_hidden]: prompts, then unconditional rows
    rows_mask: np.ndarray
    grid: np.ndarray  # delayed tokens of generated codes [2B*K, width] (duplicated for guidance)
    beat_grid: np.ndarray | None  # a beat grid's features [2B, width, 6] (none: the model has no grid)
    prefill: int  # columns fed to decoder_model; the rest go one by one to decoder_with_past_model
    logits: np.ndarray  # transformers' decoder logits over the whole grid [2B*K, width, vocab]
    codes: list[np.ndarray]  # [1, B, K, frames] at two lengths: the generation's and a streaming chunk's
    audio: list[np.ndarray]


@torch.inference_mode()
def parity_inputs(model: torch.nn.Module, processor: Any, card: Any, params: ExportParams) -> ParityInputs:
    """Tokenize real prompts, generate a few frames for them, and run transformers' modules on both."""
    generator = MusicGenerator(model, processor, card)
    prompts = [*PROMPTS[: params.parity_prompts], ""]
    input_ids, encoder_mask, mask = generator.tokenize(prompts)
    raw = model.text_encoder(input_ids=input_ids, attention_mask=encoder_mask).last_hidden_state
    beat_grid = beat_grid_of(model.decoder)
    tempi = None if beat_grid is None else prompt_tempi(prompts)
    text = Conditioning(states=raw * mask[..., None], mask=mask, tempi=tempi)
    rows_states, rows_mask, rows_tempi = *text.rows(GUIDANCE), text.row_tempi(GUIDANCE)

    K = generator.num_codebooks
    frames = max(params.parity_steps, 4)
    codes = generator.generate(
        prompts, GenerationParams(duration=frames / generator.frame_rate, guidance_scale=GUIDANCE, seed=0)
    ).codes[:, :, :frames]
    special = model.config.decoder.vocab_size
    grid = build_delay_pattern(codes, special)
    grid = torch.cat([grid, grid])  # the guided batch's rows
    projected = text_projection(model)(rows_states) * rows_mask[..., None]
    with grid_in_forward(model.decoder, rows_tempi, 0, grid.shape[2]):
        logits = model.decoder(
            input_ids=grid.flatten(0, 1),
            encoder_hidden_states=projected,
            encoder_attention_mask=rows_mask,
            use_cache=False,
        ).logits
    features = None if beat_grid is None else grid_features(rows_tempi, 0, grid.shape[2], beat_grid.frame_rate)
    short = codes[:, :, :3]  # the streaming decoder's first decode: 1 frame and 2 of lookahead
    audio = [model.audio_encoder.decode(c[None], [None]).audio_values for c in (codes, short)]
    return ParityInputs(
        input_ids=input_ids.numpy(),
        encoder_mask=encoder_mask.numpy(),
        mask=mask.numpy(),
        text_states=text.states.numpy(),
        rows_states=rows_states.numpy(),
        rows_mask=rows_mask.numpy(),
        grid=grid.flatten(0, 1).numpy(),
        beat_grid=None if features is None else features.numpy(),
        prefill=K,
        logits=logits.float().numpy(),
        codes=[codes[None].numpy(), short[None].numpy()],
        audio=[a.numpy() for a in audio],
    )


def _measure(pairs: list[tuple[np.ndarray, np.ndarray]], bound: float) -> GraphParity:
    diff = max(float(np.max(np.abs(ours.astype(np.float64) - theirs))) for ours, theirs in pairs)
    scale = max(float(np.max(np.abs(theirs))) for _, theirs in pairs)
    if not np.isfinite(diff):
        diff = float("inf")
    relative = diff / max(1.0, scale)
    return GraphParity(diff, scale, relative, bound, relative <= bound)


def check_graph(runner: GraphRunner, graph: str, data: ParityInputs, num_layers: int, bound: float) -> GraphParity:
    """Run `graph` in onnxruntime on the parity inputs and compare with transformers' outputs."""
    if graph == TEXT_ENCODER:
        states = runner.run(graph, {"input_ids": data.input_ids, "attention_mask": data.encoder_mask})
        pairs = [(states["last_hidden_state"] * data.mask[..., None], data.text_states)]
    elif graph == DECODER:
        out = _prefill(runner, data)
        pairs = [(out["logits"], data.logits[:, : data.prefill])]
    elif graph in CACHED_STEPS:
        pairs = _cached_steps(runner, graph, data, num_layers)
    elif graph == CODEC_DECODER:
        pairs = [
            (runner.run(graph, {"audio_codes": codes})["audio_values"], audio)
            for codes, audio in zip(data.codes, data.audio, strict=True)
        ]
    else:
        raise ValueError(f"unknown graph {graph!r}")
    return _measure(pairs, bound)


def _cached_steps(
    runner: GraphRunner, graph: str, data: ParityInputs, num_layers: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    # A decoder_model prefill, then every later column one by one, each run's cache feeding the next.
    # decoder_with_shared_cache takes buffers as wide as the grid and the length (OnnxDecoder binds them
    # in place instead; the numbers are the same).
    out = _prefill(runner, data)
    cache = [out[name] for name in present_names(num_layers)]
    shared = graph == SHARED_CACHE_DECODER
    if shared:
        cache = grown_to_capacity(cache, num_layers, data.grid.shape[1])
    pairs = []
    for column in range(data.prefill, data.grid.shape[1]):
        feeds = dict(zip(past_names(num_layers), cache, strict=True))
        feeds.update(decoder_input_ids=data.grid[:, column : column + 1], attention_mask=data.rows_mask)
        if data.beat_grid is not None:
            feeds[BEAT_GRID_INPUT] = np.ascontiguousarray(data.beat_grid[:, column : column + 1])
        if shared:
            feeds.update(
                seqlens_k=np.full(len(data.rows_mask), column, dtype=np.int32),
                total_sequence_length=np.array(column + 1, dtype=np.int32),
            )
        step = runner.run(graph, feeds)
        for i in range(num_layers):
            cache[4 * i], cache[4 * i + 1] = step[f"present.{i}.decoder.key"], step[f"present.{i}.decoder.value"]
        pairs.append((step["logits"], data.logits[:, column : column + 1]))
    return pairs


def _prefill(runner: GraphRunner, data: ParityInputs) -> dict[str, np.ndarray]:
    feeds = {
        "decoder_input_ids": np.ascontiguousarray(data.grid[:, : data.prefill]),
        "encoder_outputs": data.rows_states,
        "attention_mask": data.rows_mask,
    }
    if data.beat_grid is not None:
        feeds[BEAT_GRID_INPUT] = np.ascontiguousarray(data.beat_grid[:, : data.prefill])
    return runner.run(DECODER, feeds)


def _require(graph: str, parity: GraphParity, variant: str) -> None:
    if not parity.passed:
        raise ParityError(
            f"parity check failed for {graph} ({variant}): max |onnxruntime - torch| = {parity.max_abs_diff:.3g} "
            f"at output scale {parity.scale:.3g} is {parity.relative:.3g} relative, above the bound "
            f"{parity.bound:g}; nothing was published"
        )


# -- INT8 ------------------------------------------------------------------------------------------


def quantize_graph(source: Path, target: Path) -> None:
    """Dynamic INT8: weights of MatMul/Gemm stored as QInt8, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs a suggestion to pre-process (shape inference) on the root logger for every graph.
    with _quiet_logger(logging.getLogger(), logging.ERROR):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            # per-channel ranges keep small-valued output channels from rounding to zero
            per_channel=True,
            use_external_data_format=source.with_name(f"{source.name}.data").exists(),
        )


# -- the stage -------------------------------------------------------------------------------------


def _copy_model_files(model_dir: Path, folder: Path, grid_frame_rate: float | None) -> None:
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, folder / path.name)
    if grid_frame_rate is not None:  # the grid's weights are in the decoder graphs; its frame rate is here
        write_onnx_note(folder, grid_frame_rate)


def _sizes(folder: Path) -> dict[str, int]:
    return {graph: sum(p.stat().st_size for p in folder.glob(f"{graph}.onnx*")) for graph in EXPORTED_GRAPHS}


def _manifest(report: ExportReport, model_dir: Path, card: Any, variant: str) -> dict[str, Any]:
    int8 = variant == "int8"
    parity = report.int8_parity if int8 else report.parity
    sizes = report.int8_sizes if int8 else report.sizes
    return {
        "format": "huggingface-optimum-musicgen",
        "variant": variant,
        "int8": int8,
        "quantization": (
            {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "QInt8",
                "per_channel": True,
                "op_types": ["MatMul", "Gemm"],
                "kept_fp32": [CODEC_DECODER],
            }
            if int8
            else None
        ),
        "opset": report.opset,
        "graphs": {
            graph: {"file": f"{graph}.onnx", "bytes": sizes[graph], "parity": asdict(parity[graph])}
            for graph in EXPORTED_GRAPHS
        },
        "parity_metric": "max |onnxruntime - torch| / max(1, max |torch|) over real inputs",
        "logits_layout": "[total_batch_size_x_num_codebooks, decoder_sequence_length, vocab]",
        "int8_folder": INT8_DIR if report.int8_parity is not None and not int8 else None,
        "source_model": str(model_dir.resolve()),
        "data_version": card.data_version,
        "preset": card.preset,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "notes": report.notes,
    }


def write_int8(
    fp32: Path,
    folder: Path,
    model_dir: Path,
    data: ParityInputs,
    layers: int,
    params: ExportParams,
    grid_frame_rate: float | None = None,
) -> dict[str, GraphParity]:
    """The int8/ folder: quantized text encoder and decoders, the fp32 codec decoder, the model files;
    checked against torch with the INT8 bound."""
    folder.mkdir()
    for graph in EXPORTED_GRAPHS:
        source = fp32 / f"{graph}.onnx"
        if graph == CODEC_DECODER:  # convolutions and an LSTM: MatMul/Gemm quantization would skip most of it
            for path in fp32.glob(f"{graph}.onnx*"):
                shutil.copy2(path, folder / path.name)
        else:
            quantize_graph(source, folder / source.name)
    _copy_model_files(model_dir, folder, grid_frame_rate)
    runner = OrtRunner(folder)
    parity = {graph: check_graph(runner, graph, data, layers, params.int8_tolerance) for graph in EXPORTED_GRAPHS}
    for graph, result in parity.items():
        _require(graph, result, "int8")
    return parity


def export(model_dir: Path, out_dir: Path, params: ExportParams) -> ExportReport:
    """Export the model in `model_dir` to `out_dir` (and `out_dir/int8`), each graph parity-checked."""
    params.check()
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, processor, card = load_model(model_dir)
    beat_grid = beat_grid_of(model.decoder)
    grid_frame_rate = None if beat_grid is None else beat_grid.frame_rate
    data = parity_inputs(model, processor, card, params)
    layers = model.config.decoder.num_hidden_layers
    report = ExportReport(out_dir=out_dir, opset=params.opset, parity={}, sizes={})
    if grid_frame_rate is not None:
        report.notes.append(f"the decoder graphs take a beat grid's features ({BEAT_GRID_INPUT}; beat_grid.json)")
    report.notes.append(
        "no codec encoder graph (Optimum has none, and torch.export cannot trace EnCodec's length-dependent "
        "strided padding): continuing an audio prompt needs the torch backend"
    )
    example = processor.tokenizer(PROMPTS[:2], padding=True, return_tensors="pt", return_token_type_ids=False)
    # padded: with an all-ones example mask the exporter could drop the mask input
    specs = graph_specs(model, example["input_ids"], example["attention_mask"])
    with atomic_directory(out_dir) as staging:
        for graph, spec in specs.items():
            export_graph(graph, spec, staging / f"{graph}.onnx", params.opset)
            # checked at once: a failing graph stops the export before the later (slower) ones
            runner = OrtRunner(staging, graphs=(DECODER, graph) if graph in CACHED_STEPS else (graph,))
            report.parity[graph] = check_graph(runner, graph, data, layers, params.tolerance)
            _require(graph, report.parity[graph], "fp32")
        _copy_model_files(model_dir, staging, grid_frame_rate)
        report.sizes = _sizes(staging)
        if params.int8:
            report.int8_parity = write_int8(
                staging, staging / INT8_DIR, model_dir, data, layers, params, grid_frame_rate
            )
            report.int8_sizes = _sizes(staging / INT8_DIR)
        report.seconds = time.perf_counter() - started
        (staging / EXPORT_FILE).write_text(json.dumps(_manifest(report, model_dir, card, "fp32"), indent=2) + "\n")
        if params.int8:
            manifest = _manifest(report, model_dir, card, "int8")
            (staging / INT8_DIR / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its export section.")] = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="The model directory (train's output).")] = Path("artifacts/model"),
    out: Annotated[Path, typer.Option(help="Output folder: ONNX graphs, config, tokenizer, export.json.")] = Path(
        "artifacts/onnx"
    ),
) -> None:
    """Export the model to ONNX in Optimum's MusicGen layout, each graph checked against torch."""
    try:
        report = export(model, out, load_section(params, "export"))
    except ParityError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    except (ParamsError, ModelInputError, ExportError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    worst = ", ".join(f"{graph} {p.relative:.1e}" for graph, p in report.parity.items())
    typer.echo(f"exported {len(report.parity)} graphs to {out} in {report.seconds:.0f} s; parity (relative): {worst}")
    if report.int8_parity is not None:
        worst = ", ".join(f"{graph} {p.relative:.1e}" for graph, p in report.int8_parity.items())
        typer.echo(f"int8 graphs in {out / INT8_DIR}; parity vs torch (relative): {worst}")


if __name__ == "__main__":
    app()
