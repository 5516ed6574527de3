"""Generation over exported ONNX graphs: the same loop as the torch generator, other engines underneath.

The export (`components/export/`) writes Hugging Face Optimum's MusicGen layout; this module is its
runtime. Everything here talks to the graphs through a `GraphRunner`, a single call
`run(graph, inputs) -> outputs` on numpy arrays, so one decoding loop (model/decoding.py, driven by
`BaseMusicGenerator`) serves every transport: `OrtRunner` runs the graphs in-process with ONNX Runtime,
and a Triton runner (BLS or tritonclient) only has to implement the same call. Sampling is that loop's too
(model/sampling.py: each prompt draws from its own random generator), so a prompt with a seed draws the same
tokens alone as in any batch, and here as on torch (tests/model/test_onnx_backend.py says how exactly).

Graphs (file stem -> inputs -> outputs; `B` rows, `K` codebooks, `S` text tokens, `L` decoder layers):

    text_encoder             input_ids, attention_mask [B, S] int64 -> last_hidden_state [B, S, text_hidden]
    decoder_model            decoder_input_ids [B*K, n] int64, encoder_outputs [B, S, text_hidden] (raw text
                             states: the graph applies MusicGen's enc_to_dec_proj and the mask itself),
                             attention_mask [B, S] int64
                             -> logits [B*K, n, vocab] (every position, as transformers returns them),
                                present.{i}.decoder.key/value [B, heads, n, head_dim],
                                present.{i}.encoder.key/value [B, heads, S, head_dim]
    decoder_with_past_model  decoder_input_ids [B*K, 1], attention_mask [B, S],
                             past_key_values.{i}.decoder.key/value, past_key_values.{i}.encoder.key/value
                             -> logits [B*K, 1, vocab], present.{i}.decoder.key/value (one position longer)
    encodec_decode           audio_codes [1, B, K, frames] int64 -> audio_values [B, 1, samples] float32

With a beat grid (model/beat_grid.py; the folder has beat_grid.json) the three decoder graphs take one more
input, beat_grid [B, n, 6] float32: the grid's features of each row's n new positions (zero for rows with no
tempo), computed here from the prompts as the torch generator computes them.
    decoder_with_shared_cache  (ours, optional) decoder_with_past over cache buffers [B, heads, capacity,
                             head_dim] holding total_sequence_length - 1 positions, plus seqlens_k [B] and
                             total_sequence_length [] int32 -> logits, present.{i}.decoder.key/value (the
                             buffers with the new position written; `OrtRunner.run_in_place` binds them to
                             the inputs' memory, so nothing is copied)

Optimum exports no codec encoder, and neither do we (torch.export cannot trace EnCodec's
length-dependent strided padding on torch 2.13), so continuing an audio prompt needs the torch
backend; long-form generation and continuation from codes (`iter_frames(prompt_codes=...)`) work here.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenProcessor

from model.beat_grid import ONNX_INPUT, grid_features, prompt_tempi, read_onnx_note
from model.checkpoint import ModelCard
from model.decoding import Conditioning
from model.errors import ModelInputError, first_line
from model.generator import BaseMusicGenerator
from model.thread_calibration import calibrated_threads

TEXT_ENCODER, DECODER, DECODER_WITH_PAST, CODEC_DECODER = (
    "text_encoder",
    "decoder_model",
    "decoder_with_past_model",
    "encodec_decode",
)
GRAPHS = (TEXT_ENCODER, DECODER, DECODER_WITH_PAST, CODEC_DECODER)
# Beyond Optimum's four: decoder_with_past over cache buffers that a run appends to in place
# (components/export/shared_cache_graph.py). Optional: without it, or through a runner that cannot bind buffers,
# the cached steps run decoder_with_past_model.
SHARED_CACHE_DECODER = "decoder_with_shared_cache"
EXPORTED_GRAPHS = (*GRAPHS, SHARED_CACHE_DECODER)
# The Triton model serving each graph (components/triton_repository.py lays the repository out by it; runners
# over Triton call these names).
TRITON_MODEL_NAMES = {
    TEXT_ENCODER: "text_encoder",
    DECODER: "decoder",
    DECODER_WITH_PAST: "decoder_with_past",
    CODEC_DECODER: "codec_decoder",
}


def past_names(num_layers: int) -> list[str]:
    """The cache inputs of decoder_with_past_model, in Optimum's order."""
    return [
        f"past_key_values.{i}.{part}.{kind}"
        for i in range(num_layers)
        for part in ("decoder", "encoder")
        for kind in ("key", "value")
    ]


def present_names(num_layers: int, with_encoder: bool = True) -> list[str]:
    """The cache outputs: decoder_model returns both caches, decoder_with_past_model only the decoder's."""
    parts = ("decoder", "encoder") if with_encoder else ("decoder",)
    return [f"present.{i}.{part}.{kind}" for i in range(num_layers) for part in parts for kind in ("key", "value")]


def grown_to_capacity(cache: list[np.ndarray], num_layers: int, capacity: int) -> list[np.ndarray]:
    """A prefill's cache (past_names order) with each decoder key and value copied into a zeroed buffer of
    `capacity` positions, as decoder_with_shared_cache takes them; the text's keys and values as they are."""
    grown = list(cache)
    for j in [4 * i + k for i in range(num_layers) for k in (0, 1)]:
        filled = cache[j]
        grown[j] = np.zeros((*filled.shape[:2], capacity, filled.shape[3]), dtype=np.float32)
        grown[j][:, :, : filled.shape[2]] = filled
    return grown


def _cpu_only(providers: Sequence[str] | None) -> bool:
    import onnxruntime as ort

    chosen = providers if providers is not None else ort.get_available_providers()
    return "CUDAExecutionProvider" not in chosen


def _shape_digest(directory: Path) -> str:
    """What makes two exports decode at the same speed: the config and the graphs' sizes (INT8 or not)."""
    digest = hashlib.sha256((directory / "config.json").read_bytes())
    for graph in sorted(directory.glob("*.onnx")):
        digest.update(f"{graph.name}:{graph.stat().st_size};".encode())
    return digest.hexdigest()[:16]


def _seconds_per_step(generator: BaseMusicGenerator) -> float:
    """Wall time per decoding step of a short guided generation at batch 1 (after one to warm up)."""
    from model.generation_params import GenerationParams

    settings = GenerationParams(duration=min(0.5, 32 / generator.frame_rate), guidance_scale=3.0, seed=0)
    generator.generate(["calibration"], settings)
    started = time.perf_counter()
    generator.generate(["calibration"], settings)
    return (time.perf_counter() - started) / generator.frames_for(settings.duration)


@runtime_checkable
class GraphRunner(Protocol):
    """Runs one of the exported graphs (`GRAPHS`, by file stem) on named numpy inputs."""

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def default_threads() -> int:
    # The decoder's matrices are small at batch 1: past a few threads, synchronisation costs more than it
    # saves, and several servers' sessions on one machine should not each claim every core.
    return max(1, min(4, os.cpu_count() or 1))


class OrtRunner:
    """`GraphRunner` over ONNX Runtime sessions, created once per graph of an exported folder."""

    def __init__(
        self,
        directory: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        graphs: Sequence[str] = EXPORTED_GRAPHS,
    ):
        import onnxruntime as ort

        directory = Path(directory)
        present = [g for g in graphs if (directory / f"{g}.onnx").is_file()]
        missing = [g for g in graphs if g not in present and g != SHARED_CACHE_DECODER]
        if missing:
            raise ModelInputError(
                f"{directory} is not an ONNX export: {', '.join(m + '.onnx' for m in missing)} missing "
                "(run the export stage: python -m components.export)"
            )
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1  # the graphs are chains: nothing runs in parallel between nodes
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ONNX Runtime's idle threads spin after each run by default; between decoder steps torch samples
        # the next tokens on the same cores, and spinning threads made its softmax 10x slower here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.directory = directory
        # Buffers bound in place are host memory: with a GPU provider ONNX Runtime would copy them each run.
        self.binds_host_buffers = list(providers) == ["CPUExecutionProvider"]
        self.sessions = {}
        for graph in present:
            try:
                self.sessions[graph] = ort.InferenceSession(
                    str(directory / f"{graph}.onnx"), options, providers=list(providers)
                )
            except Exception as error:  # a boundary: a truncated or foreign file is a bad export
                reason = first_line(error)
                raise ModelInputError(f"cannot load {graph}.onnx from {directory}: {reason}") from None
        self.output_names = {g: [o.name for o in s.get_outputs()] for g, s in self.sessions.items()}

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names[graph]
        return dict(zip(names, self.sessions[graph].run(names, inputs), strict=True))

    def run_in_place(
        self, graph: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run `graph` writing the named `outputs` into the given contiguous float32 arrays, which may be
        inputs of the same run (a shared KV cache); returns the other outputs."""
        session = self.sessions[graph]
        binding = session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, array)
        names = self.output_names[graph]
        for name in names:
            if name in outputs:
                array = outputs[name]
                binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            else:
                binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {name: value.numpy() for name, value in zip(names, values, strict=True) if name not in outputs}


@dataclass(frozen=True)
class _LanguageModelView:
    # model/decoding.py reads the special token as `decoder.lm.config.vocab_size` (CachedDecoder wraps a
    # transformers module); this gives the ONNX decoder the same attribute from the exported config.
    config: MusicgenDecoderConfig


class OnnxDecoder:
    """`CachedDecoder`'s interface (start/step/reorder) over decoder_model and decoder_with_past_model.

    `start` takes the RAW text-encoder states (masked) and the mask, as Optimum's decoder_model does: the
    graph projects them. The first `step` runs decoder_model (prefill, empty cache); every later one runs
    decoder_with_shared_cache on buffers of the session's capacity that it appends to in place, where the
    export has it and the runner is an in-process CPU `OrtRunner`; otherwise decoder_with_past_model with
    the cache the previous call returned. With `grid_frame_rate` (an export with a beat grid) each graph
    also gets the grid's features of the positions it feeds.
    """

    def __init__(self, runner: GraphRunner, config: MusicgenDecoderConfig, grid_frame_rate: float | None = None):
        self.runner = runner
        self.grid_frame_rate = grid_frame_rate
        self.lm = _LanguageModelView(config)
        self.num_codebooks = config.num_codebooks
        self.num_layers = config.num_hidden_layers
        self.max_positions = config.max_position_embeddings
        self.position = 0
        self.in_place = (
            isinstance(runner, OrtRunner) and runner.binds_host_buffers and SHARED_CACHE_DECODER in runner.sessions
        )

    def start(
        self,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None,
        capacity: int,
        tempi: torch.Tensor | None = None,
        first_frame: int = 0,
    ) -> None:
        """Reset the cache for text states [rows, text_len, text_hidden] and up to `capacity` positions.
        With a beat grid, `tempi` [rows] (None or 0: no grid) places position 0 at frame `first_frame`."""
        if capacity > self.max_positions:
            # The graphs hold the sinusoidal table of max_position_embeddings rows (the torch decoder grows it).
            raise ModelInputError(
                f"a window of {capacity} positions exceeds this export's {self.max_positions} decoder positions"
            )
        self.states = np.ascontiguousarray(text_states.float().numpy())
        rows, length = self.states.shape[:2]
        mask = torch.ones(rows, length, dtype=torch.long) if text_mask is None else text_mask
        self.mask = np.ascontiguousarray(mask.numpy().astype(np.int64))
        self.position, self.capacity = 0, capacity
        self.grid: np.ndarray | None = None
        if self.grid_frame_rate is not None:  # the graphs take the input: zeros when no row has a tempo
            tempi = torch.zeros(rows) if tempi is None else tempi
            self.grid = grid_features(tempi, first_frame, capacity, self.grid_frame_rate).numpy()
        self.cache: list[np.ndarray] = []  # past_names order: decoder key/value, encoder key/value per layer

    def reorder(self, index: torch.Tensor) -> None:
        """Keep cache rows `index` (beam search): row i becomes the old row index[i], text included."""
        rows = index.numpy()
        self.cache = [np.ascontiguousarray(c[rows]) for c in self.cache]
        self.states, self.mask = self.states[rows], self.mask[rows]
        if self.grid is not None:
            self.grid = self.grid[rows]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [rows, codebooks, n] at the next n positions; logits [rows, codebooks, vocab] of the
        last position. n > 1 only from an empty cache (a prompt prefill)."""
        rows, codebooks, n = tokens.shape
        start, end = self.position, self.position + n
        if n > 1 and start > 0:
            raise ValueError("several tokens at once only from an empty cache")
        if end > self.capacity:
            raise ValueError(f"cache holds {self.capacity} positions, asked for {end}")
        ids = np.ascontiguousarray(tokens.reshape(rows * codebooks, n).numpy().astype(np.int64))
        grid = {} if self.grid is None else {ONNX_INPUT: np.ascontiguousarray(self.grid[:, start:end])}
        if start == 0:
            out = self.runner.run(
                DECODER,
                {"decoder_input_ids": ids, "encoder_outputs": self.states, "attention_mask": self.mask, **grid},
            )
            self.cache = [out[name] for name in present_names(self.num_layers)]
            if self.in_place:
                self.cache = grown_to_capacity(self.cache, self.num_layers, self.capacity)
        elif self.in_place:
            out = self.runner.run_in_place(
                SHARED_CACHE_DECODER,
                {
                    "decoder_input_ids": ids,
                    "attention_mask": self.mask,
                    "seqlens_k": np.full(rows, end - 1, dtype=np.int32),
                    "total_sequence_length": np.array(end, dtype=np.int32),
                    **grid,
                    **dict(zip(past_names(self.num_layers), self.cache, strict=True)),
                },
                {  # the same buffers: the new position is written where the step reads the cache
                    f"present.{i}.decoder.{kind}": self.cache[4 * i + j]
                    for i in range(self.num_layers)
                    for j, kind in enumerate(("key", "value"))
                },
            )
        else:
            feeds = dict(zip(past_names(self.num_layers), self.cache, strict=True))
            feeds.update(decoder_input_ids=ids, attention_mask=self.mask, **grid)
            out = self.runner.run(DECODER_WITH_PAST, feeds)
            # the text's keys and values do not change: only the decoder's grow
            for i in range(self.num_layers):
                self.cache[4 * i] = out[f"present.{i}.decoder.key"]
                self.cache[4 * i + 1] = out[f"present.{i}.decoder.value"]
        self.position = end
        logits = out["logits"].reshape(rows, codebooks, n, -1)[:, :, -1]
        return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))


class OnnxMusicGenerator(BaseMusicGenerator):
    """`MusicGenerator`'s API over an exported folder: `OnnxMusicGenerator.load(dir)` (ONNX Runtime), or
    any `GraphRunner` (e.g. one that calls Triton) with the folder's config and tokenizer (and, for graphs
    with a beat grid, its frame rate: `model.beat_grid.read_onnx_note`)."""

    def __init__(
        self,
        runner: GraphRunner,
        config: MusicgenConfig,
        processor: MusicgenProcessor,
        card: ModelCard,
        grid_frame_rate: float | None = None,
    ):
        self.runner = runner
        self.config = config
        self.processor = processor
        self.card = card
        self.dtype = torch.float32
        self.decoder = OnnxDecoder(runner, config.decoder, grid_frame_rate)
        codec = config.audio_encoder
        self.sample_rate: int = codec.sampling_rate
        self.frame_rate: float = codec.frame_rate
        self.hop_length = round(self.sample_rate / self.frame_rate)
        self.num_codebooks: int = config.decoder.num_codebooks

    @classmethod
    def load(
        cls,
        directory: str | Path,
        runner: GraphRunner | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> OnnxMusicGenerator:
        """An exported folder (the export stage's output, or its int8/ folder); `runner` defaults to ONNX
        Runtime over the folder's graphs, on `threads` intra-op threads: when None (and on the CPU), the count
        model/thread_calibration.py measured fastest for this machine and export."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelInputError(f"ONNX model directory {directory} does not exist")
        if not (directory / "config.json").is_file():
            raise ModelInputError(f"{directory} is not an ONNX export: it has no config.json")
        try:
            config = MusicgenConfig.from_pretrained(directory, local_files_only=True)
            processor = MusicgenProcessor.from_pretrained(directory, local_files_only=True)
        except Exception as error:  # a boundary: any failure to read the files is a bad directory
            reason = first_line(error)
            raise ModelInputError(f"cannot read the config and tokenizer in {directory}: {reason}") from None
        grid_frame_rate = read_onnx_note(directory)
        card = ModelCard.read(directory)
        if runner is None:
            if threads is None and _cpu_only(providers):

                def seconds_per_step(count: int) -> float:
                    trial = OrtRunner(directory, providers=providers, threads=count)
                    return _seconds_per_step(cls(trial, config, processor, card, grid_frame_rate))

                threads = calibrated_threads(f"onnx {_shape_digest(directory)}", seconds_per_step)
            runner = OrtRunner(directory, providers=providers, threads=threads)
        return cls(runner, config, processor, card, grid_frame_rate)

    def encode_text(self, prompts: list[str]) -> Conditioning:
        """Raw (unprojected) text states, zero where masked; an empty prompt is unconditional."""
        input_ids, encoder_mask, mask = self.tokenize(prompts)
        # The encoder sees the tokenizer's own mask: an all-masked row would be undefined in the graph's
        # softmax; the conditioning mask then zeroes what the decoder must not see.
        states = self.runner.run(
            TEXT_ENCODER,
            {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": encoder_mask.numpy().astype(np.int64)},
        )["last_hidden_state"]
        states = torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32)) * mask[..., None]
        tempi = None if self.decoder.grid_frame_rate is None else prompt_tempi(prompts)
        return Conditioning(states=states, mask=mask, tempi=tempi)

    def encode_audio(self, audio: np.ndarray) -> torch.Tensor:
        raise ModelInputError(
            "continuing an audio prompt needs the codec encoder, which the ONNX export does not include "
            "(Optimum's layout has only encodec_decode): use the torch backend for audio prompts"
        )

    def decode_audio(self, codes: torch.Tensor) -> np.ndarray:
        """Mono float32 audio [B, samples] of codes [B, K, frames]."""
        audio_codes = np.ascontiguousarray(codes[None].numpy().astype(np.int64))
        audio = self.runner.run(CODEC_DECODER, {"audio_codes": audio_codes})["audio_values"]
        return np.ascontiguousarray(audio[:, 0], dtype=np.float32)
