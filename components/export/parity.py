"""Parity: every exported graph run in ONNX Runtime on real inputs and compared with transformers' modules.

The inputs are tokenized prompts of different lengths with padding, a guided batch whose unconditional rows
are zero states with a zero mask as model/decoding.py builds them, and codes from a short generation. A
breach raises ParityError naming the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from components.export.errors import ParityError
from model.beat_grid import ONNX_INPUT as BEAT_GRID_INPUT
from model.beat_grid import beat_grid_of, grid_features, grid_in_forward, prompt_tempi
from model.build import text_projection
from model.decoding import Conditioning
from model.delay_pattern import build_delay_pattern
from model.generation_params import GenerationParams
from model.generator import MusicGenerator
from model.onnx_backend import (
    CODEC_DECODER,
    DECODER,
    DECODER_WITH_PAST,
    SHARED_CACHE_DECODER,
    TEXT_ENCODER,
    GraphRunner,
    grown_to_capacity,
    past_names,
    present_names,
)
from settings.params import ExportParams

CACHED_STEPS = (DECODER_WITH_PAST, SHARED_CACHE_DECODER)  # checked after a decoder_model prefill
GUIDANCE = 3.0  # the guided batch of the parity check: prompts, then as many unconditional rows
PROMPTS = [  # with and without a tempo: a beat grid's rows get features or zeros
    "jazz",
    "upbeat electronic dance track at 128 BPM with a punchy kick drum and bright synth leads",
    "slow folk ballad with fiddle",
    "ambient pads over soft piano, calm and spacious, with distant rain",
]


@dataclass
class GraphParity:
    """max |onnxruntime - torch| over the parity inputs, and that relative to max(1, max |torch|)."""

    max_abs_diff: float
    scale: float
    relative: float
    bound: float
    passed: bool


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
