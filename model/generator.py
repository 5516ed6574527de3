"""Text (and optionally audio) in, music out: the generation API every caller uses.

`MusicGenerator` wraps a transformers MusicGen with explicit parameters (`GenerationParams`):
batched prompts, classifier-free guidance, top-k/top-p/temperature sampling, seeds, beam search,
continuation of an audio prompt, long-form generation past the decoder's context in overlapping
windows (audiocraft's `extend_stride`), and streaming audio chunks while tokens are still produced.

The loop lives in `BaseMusicGenerator` and reaches the model only through text encoding, a decoder
session (start/step/reorder) and codec decoding, so `model.onnx_backend.OnnxMusicGenerator` runs the
same loop over exported graphs; `model.loader.load_generator(source, backend="torch" | "onnx")` picks one.

Seeds are per row: each prompt samples from its own random generator, so a prompt draws the same tokens
whatever else is in its batch. `generate(prompts, params)` with one `params.seed` gives prompt i the seed
seed + i (`model.generation_params.row_seeds`): a single prompt draws exactly what its seed draws, and prompt i
of a batch is reproduced alone with seed + i. `seeds=[...]` gives each prompt its own (what the serving
engine does when requests with different seeds share a batch).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import MusicgenForCausalLM, MusicgenForConditionalGeneration, MusicgenProcessor

from model.beat_grid import beat_grid_of, prompt_tempi
from model.build import build_model, configure, text_projection
from model.checkpoint import ModelCard, load_model
from model.decoder_step import CachedDecoder, DecoderSession
from model.decoding import Conditioning, beam_window, sample_window
from model.errors import ModelInputError
from model.generation_params import GenerationParams, check_seed, draw_seed, row_seeds
from model.presets import PRESETS
from model.row_decoder import RowDecoder
from model.sampling import row_generators
from model.streaming import StreamingCodecDecoder

Progress = Callable[[int, int], None]  # (frames done, frames in all)


@dataclass
class Generation:
    """Audio [B, samples] (float32, mono), its codes [B, K, frames], and the seeds that made it: `seeds[i]` is
    row i's (the same row generated alone with that seed comes out the same), `seed` is row 0's."""

    audio: np.ndarray
    sample_rate: int
    codes: torch.Tensor
    seed: int
    seeds: list[int]


class BaseMusicGenerator:
    """The generation loop (windows, sampling or beams, long-form, continuation, streaming) over pluggable
    parts that a subclass provides: `encode_text`, `encode_audio`, `decode_audio`, and a `decoder` with
    CachedDecoder's start/step/reorder. `MusicGenerator` runs them in torch; `model.onnx_backend`'s
    `OnnxMusicGenerator` runs exported graphs. Subclasses also set `processor` (its tokenizer), `card`,
    `dtype`, `sample_rate`, `frame_rate`, `hop_length` and `num_codebooks`.
    """

    processor: MusicgenProcessor
    card: ModelCard
    decoder: DecoderSession
    dtype: torch.dtype
    sample_rate: int
    frame_rate: float
    hop_length: int
    num_codebooks: int
    joins_running_batches = False  # whether `row_decoder` gives one (continuous batching)

    def encode_text(self, prompts: list[str]) -> Conditioning:
        """The text as this backend's decoder takes it in `start`; an empty prompt is unconditional."""
        raise NotImplementedError

    def encode_audio(self, audio: np.ndarray) -> torch.Tensor:
        """Codes [B, K, frames] of mono audio [B, samples] at the model's sample rate."""
        raise NotImplementedError

    def decode_audio(self, codes: torch.Tensor) -> np.ndarray:
        """Mono float32 audio [B, samples] of codes [B, K, frames]."""
        raise NotImplementedError

    def row_decoder(self, max_positions: int) -> RowDecoder:
        """A decoder whose rows may start at different steps (continuous batching). Only the torch backend
        has one: the ONNX graphs put every row at one position."""
        raise NotImplementedError(f"{type(self).__name__} cannot add rows to a running batch")

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids [B, S], the tokenizer's mask, and the conditioning mask (all zero for an empty prompt)."""
        tokens = self.processor.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=256,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        mask = tokens["attention_mask"].clone()
        mask[torch.tensor([not p.strip() for p in prompts])] = 0
        return tokens["input_ids"], tokens["attention_mask"], mask

    # -- generation ----------------------------------------------------------------------------

    def frames_for(self, seconds: float) -> int:
        return max(1, int(np.ceil(seconds * self.frame_rate - 1e-6)))

    def _prepare(
        self, prompts: list[str], params: GenerationParams, seeds: Sequence[int] | None
    ) -> tuple[list[int], list[torch.Generator]]:
        """Each prompt's seed (`seeds`, else `params.seed` or one drawn, spread over the rows) and generator."""
        if not prompts:
            raise ModelInputError("at least one prompt is needed (an empty string is unconditional)")
        params.check(self.card.max_duration_seconds)
        if seeds is None:
            seeds = row_seeds(params.seed if params.seed is not None else draw_seed(), len(prompts))
        elif len(seeds) != len(prompts):
            raise ModelInputError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one per prompt")
        for seed in seeds:
            check_seed(seed)
        return list(seeds), row_generators(seeds)

    @torch.inference_mode()
    def iter_frames(
        self,
        prompts: list[str],
        params: GenerationParams,
        prompt_codes: torch.Tensor | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Iterator[torch.Tensor]:
        """New frames [B, K, n] in order, as soon as they are final, window after window. `generators`: one
        per prompt, which it samples from (None: torch's global generator)."""
        text = self.encode_text(prompts)
        batch = len(prompts)
        history = prompt_codes if prompt_codes is not None else torch.zeros(batch, self.num_codebooks, 0)
        history = history.long()
        context = self.frames_for(self.card.context_seconds)
        stride = self.frames_for(self.card.extend_stride_seconds)
        remaining = self.frames_for(params.duration)
        first = True
        while remaining > 0:
            # The first window keeps as much of an audio prompt as leaves room to generate; later
            # windows restart from the last (context - stride) frames, so each advances by `stride`.
            keep = context - stride if not first else min(history.shape[2], context - 1)
            prefix = history[:, :, history.shape[2] - keep :] if keep > 0 else history[:, :, :0]
            count = min(remaining, context - prefix.shape[2])
            first_frame = history.shape[2] - prefix.shape[2]
            if params.num_beams > 1:
                frames, _ = beam_window(self.decoder, text, prefix, count, params, first_frame)
                yield frames
                produced = [frames]
            else:
                produced = []
                for frame in sample_window(self.decoder, text, prefix, count, params, generators, first_frame):
                    produced.append(frame[:, :, None])
                    yield produced[-1]
            history = torch.cat([history, *produced], dim=2)
            remaining -= count
            first = False

    def generate(
        self,
        prompts: list[str],
        params: GenerationParams,
        audio_prompt: np.ndarray | None = None,
        progress: Progress | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Generation:
        """Generate `params.duration` seconds per prompt; with `audio_prompt` [B, samples], continue it
        (the result then starts with the prompt audio, re-encoded). `seeds`, one per prompt, replace
        `params.seed` (module docstring)."""
        seeds, generators = self._prepare(prompts, params, seeds)
        prompt_codes = None if audio_prompt is None else self.encode_audio(audio_prompt)
        total = self.frames_for(params.duration)
        pieces = [] if prompt_codes is None else [prompt_codes.long()]
        done = 0
        for frames in self.iter_frames(prompts, params, prompt_codes, generators):
            pieces.append(frames)
            done += frames.shape[2]
            if progress:
                progress(done, total)
        codes = torch.cat(pieces, dim=2)
        samples = round(params.duration * self.sample_rate)
        if audio_prompt is not None:
            samples += audio_prompt.shape[-1]
        audio = self.decode_audio(codes)[:, :samples]
        return Generation(audio=audio, sample_rate=self.sample_rate, codes=codes, seed=seeds[0], seeds=seeds)

    def stream(
        self,
        prompts: list[str],
        params: GenerationParams,
        progress: Progress | None = None,
        seeds: Sequence[int] | None = None,
        **chunking: int,
    ) -> Iterator[np.ndarray]:
        """Audio chunks [B, samples] while generation runs; `chunking` goes to StreamingCodecDecoder.

        The seeds are fixed before the first chunk: give them (`seeds`, one per prompt, or `params.seed`, spread
        over the prompts as `generate` does) to know them; None draws one at random.
        """
        if params.num_beams > 1:
            raise ModelInputError("streaming needs num_beams=1: beams reorder frames until the end")
        _, generators = self._prepare(prompts, params, seeds)
        decoder = StreamingCodecDecoder(self.decode_audio, self.hop_length, **chunking)
        samples = round(params.duration * self.sample_rate)
        total, done, sent = self.frames_for(params.duration), 0, 0
        for frames in self.iter_frames(prompts, params, None, generators):
            done += frames.shape[2]
            if progress:
                progress(done, total)
            chunk = decoder.push(frames)
            if chunk is not None:
                chunk = chunk[:, : samples - sent]
                sent += chunk.shape[1]
                yield chunk
        chunk = decoder.flush()
        if chunk is not None and sent < samples:
            yield chunk[:, : samples - sent]


class MusicGenerator(BaseMusicGenerator):
    """Generation over one loaded torch model. Build it with `MusicGenerator.load(dir_or_preset)`."""

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        processor: MusicgenProcessor,
        card: ModelCard,
        dtype: torch.dtype = torch.float32,
    ):
        """`dtype` is the decoder's: bfloat16 halves the weight traffic that bounds CPU decoding (and
        changes results slightly); sampling and the codec stay in float32."""
        self.model = model.eval()
        self.model.decoder.to(dtype)
        self.dtype = dtype
        self.processor = processor
        self.card = card
        self.decoder = CachedDecoder(model.decoder)
        codec = model.config.audio_encoder
        self.sample_rate: int = codec.sampling_rate
        self.frame_rate: float = codec.frame_rate
        self.hop_length = round(self.sample_rate / self.frame_rate)
        self.num_codebooks: int = model.config.decoder.num_codebooks

    @classmethod
    def load(
        cls, source: str | Path, text_encoder: str | None = None, dtype: torch.dtype = torch.float32
    ) -> MusicGenerator:
        """A model directory, or a preset name for a randomly initialised (untrained) model."""
        if str(source) in PRESETS and not Path(source).exists():
            preset = PRESETS[str(source)]
            model, processor = build_model(preset, text_encoder)
            card = ModelCard.for_preset(preset, notes="untrained: random weights")
            return cls(model, processor, card, dtype)
        return cls(*load_model(source), dtype=dtype)

    def untrained(self, seed: int = 0) -> MusicGenerator:
        """This model with a freshly initialised decoder and text projection but the same (pretrained,
        frozen) text encoder and codec: the baseline that shows what training bought."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = MusicgenForConditionalGeneration(
                text_encoder=copy.deepcopy(self.model.text_encoder),
                audio_encoder=copy.deepcopy(self.model.audio_encoder),
                decoder=MusicgenForCausalLM(copy.deepcopy(self.model.config.decoder)),
            )
        card = replace(self.card, metrics={}, notes="untrained: random decoder, this model's text encoder and codec")
        return MusicGenerator(configure(fresh), self.processor, card)

    joins_running_batches = True

    def row_decoder(self, max_positions: int) -> RowDecoder:
        return RowDecoder(self.model.decoder, max_positions)

    # -- text and audio ------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> Conditioning:
        """Text states as the decoder's cross-attention sees them; an empty prompt is unconditional."""
        input_ids, _, mask = self.tokenize(prompts)
        states = self.model.text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        states = text_projection(self.model)(states)
        tempi = prompt_tempi(prompts) if beat_grid_of(self.model.decoder) is not None else None
        return Conditioning(states=(states * mask[..., None]).to(self.dtype), mask=mask, tempi=tempi)

    @torch.inference_mode()
    def encode_audio(self, audio: np.ndarray) -> torch.Tensor:
        """Codes [B, K, frames] of mono audio [B, samples] at the model's sample rate."""
        values = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[:, None, :]
        bandwidth = self.model.config.audio_encoder.target_bandwidths[-1]
        codes = self.model.audio_encoder.encode(values, bandwidth=bandwidth).audio_codes
        return codes[0, :, : self.num_codebooks]

    @torch.inference_mode()
    def decode_audio(self, codes: torch.Tensor) -> np.ndarray:
        """Mono float32 audio [B, samples] of codes [B, K, frames]."""
        audio = self.model.audio_encoder.decode(codes[None], [None]).audio_values
        return audio[:, 0].float().numpy()
