"""Pluggable audio embedders for Fréchet Audio Distance: frame embeddings [frames, dim] from mono audio.

FAD (as fadtk and frechet-audio-distance compute it) fits one Gaussian to every frame of every clip
of a set, so each embedder returns one row per frame, not one per clip. Four are built in:

- "mel": log-mel frames with no learned weights; always available, a sanity baseline.
- "encodec": the continuous latents of a transformers EncodecModel's encoder (before quantisation),
  the approach of fadtk's "encodec-emb"; here from whatever codec the caller passes (this run's).
- "vggish": VGGish (the classic FAD embedding) from the `torchvggish` package's architecture with
  weights from a local vggish-10086976.pth; nothing is downloaded.
- "musicnn": the penultimate layer (200-d) of the pretrained MSD_musicnn music tagger, one row per 3 s
  patch; its weights come from the `musicnn` package's wheel (model/musicnn.py).

A FAD value means something only next to values from the same embedder (and the same weights):
each `description` says so, for the report.

Heavy imports (torch, librosa, torchvggish, the musicnn network) happen inside the embedders, so importing
this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from model.audio_input import mono_at
from model.errors import ModelInputError

if TYPE_CHECKING:
    from transformers import EncodecModel

EMBEDDERS = ("mel", "encodec", "vggish", "musicnn")

VGGISH_FILE = "vggish-10086976.pth"


@runtime_checkable
class Embedder(Protocol):
    """What FAD needs from an embedder; any object with these members plugs in."""

    name: str  # one of EMBEDDERS for the built-in ones
    description: str  # one line for the report: what it is, its rate, and that values don't compare across
    dim: int
    sample_rate: int  # the rate the embedder works at; `embed` resamples any other rate to it

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Frame embeddings [frames, dim] float32 of mono float audio [samples] at `sample_rate`."""
        ...


class MelEmbedder:
    """Log-mel frames: 16 kHz, 25 ms Hann window (512-point FFT), 10 ms hop, 64 mel bands from 0 to 8 kHz
    (librosa's Slaney mel scale, unit-peak triangles), log(magnitude + 0.01).

    The log offset and magnitude scaling are VGGish's front end, so digital silence sits ~40 dB below
    white noise at 0.1 RMS instead of dominating the covariance. Frames are taken without centre
    padding: every frame is real audio.
    """

    name = "mel"
    sample_rate = 16_000
    dim = 64
    window = 400  # 25 ms
    hop = 160  # 10 ms
    n_fft = 512
    log_offset = 0.01

    def __init__(self) -> None:
        import librosa

        self.description = (
            f"mel: {self.dim}-band log-mel frames (no learned weights) at {self.sample_rate} Hz, 25 ms window, "
            "10 ms hop; FAD values are comparable only with other 'mel' values"
        )
        # norm=None: triangles peak at 1, so a band's value is plain summed magnitude, as in VGGish.
        self._filters = librosa.filters.mel(
            sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.dim, fmin=0.0, fmax=self.sample_rate / 2, norm=None
        ).astype(np.float32)
        self._hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.window) / self.window)).astype(np.float32)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Log-mel frames [frames, 64] float32; frames = 1 + (samples at 16 kHz - 400) // 160."""
        audio = mono_at(audio, sample_rate, self.sample_rate, self.window, "mel")
        frames = np.lib.stride_tricks.sliding_window_view(audio, self.window)[:: self.hop] * self._hann
        magnitude = np.abs(np.fft.rfft(frames, n=self.n_fft, axis=1)).astype(np.float32)
        return np.log(magnitude @ self._filters.T + np.float32(self.log_offset)).astype(np.float32)


class CodecEmbedder:
    """The continuous encoder latents of an EncodecModel (before quantisation), one row per codec frame.

    Audio is resampled to the codec's rate and encoded in chunks of whole frames (`chunk_seconds`, or
    the codec's own chunk length when its config has one, as fadtk does for the 48 kHz model), so
    memory stays bounded on long clips; within a chunk the encoder sees the audio in one go.
    """

    name = "encodec"

    def __init__(self, codec: EncodecModel, chunk_seconds: float = 30.0) -> None:
        config = codec.config
        self.codec = codec
        self.sample_rate = int(config.sampling_rate)
        self.dim = int(config.hidden_size)
        self.hop_length = int(np.prod(config.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        chunk = config.chunk_length or int(chunk_seconds * self.sample_rate)
        self.chunk_samples = max(self.hop_length, chunk // self.hop_length * self.hop_length)
        self.description = (
            f"encodec: {self.dim}-d EnCodec encoder latents (before quantisation) at {self.sample_rate} Hz, "
            f"{self.frame_rate:g} frames/s, from this run's codec; FAD values are comparable only between "
            "runs that embed with the same codec weights"
        )

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Encoder latents [frames, hidden_size] float32; frames = ceil(samples at the codec rate / hop)."""
        import torch

        audio = mono_at(audio, sample_rate, self.sample_rate, self.hop_length, "encodec")
        parameter = next(self.codec.parameters())
        channels = int(self.codec.config.audio_channels)
        was_training = self.codec.training
        self.codec.eval()
        outputs = []
        try:
            with torch.no_grad():
                for start in range(0, audio.size, self.chunk_samples):
                    chunk = torch.from_numpy(audio[start : start + self.chunk_samples])
                    # A stereo codec gets the mono signal on both channels.
                    x = chunk.to(parameter.device, parameter.dtype).reshape(1, 1, -1).expand(1, channels, -1)
                    latents = self.codec.encoder(x)  # [1, hidden_size, frames]
                    outputs.append(latents[0].transpose(0, 1).float().cpu().numpy())
        finally:
            # The caller's model may be mid-training; leave its mode as it was.
            self.codec.train(was_training)
        return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


def _vggish_weights_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.pth"))
        if len(found) != 1:
            what = "no .pth file" if not found else f"{len(found)} .pth files ({', '.join(p.name for p in found)})"
            raise ModelInputError(
                f"VGGish weights folder {path} holds {what}; it must hold exactly one ({VGGISH_FILE})"
            )
        return found[0]
    if not path.is_file():
        raise ModelInputError(
            f"VGGish weights {path} do not exist (pass the path of {VGGISH_FILE}; nothing is downloaded)"
        )
    return path


def _check_state_dict(state: Any, expected: dict[str, Any], path: Path) -> None:
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelInputError(f"VGGish weights {path} are not a state dict of tensors (the {VGGISH_FILE} layout)")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
        if unexpected:
            more = ", ..." if len(unexpected) > 4 else ""
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:4])}{more})")
        raise ModelInputError(f"VGGish weights {path} do not match the VGGish layout: {'; '.join(parts)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise ModelInputError(f"VGGish weights {path} have wrong shapes: {'; '.join(wrong[:4])}")


class VGGishEmbedder:
    """VGGish 128-d embeddings, one per 0.96 s example (non-overlapping), from local weights.

    As in fadtk and frechet-audio-distance (their defaults use_pca=False, use_activation=False): no PCA
    postprocessing, and the final ReLU is dropped so the embedding is the last linear layer's output.
    Inputs are torchvggish's own log-mel examples at 16 kHz (resampled here with soxr, not resampy).
    """

    name = "vggish"
    sample_rate = 16_000
    dim = 128
    example_samples = 15_360  # 0.96 s at 16 kHz
    batch_examples = 64  # bounds activation memory on long clips (each example's conv maps are a few MB)

    def __init__(self, weights: str | Path) -> None:
        import torch
        from torchvggish.torchvggish import _vgg

        self.weights_path = _vggish_weights_file(weights)
        try:
            # weights_only: a .pth is a pickle, and a state dict needs no arbitrary objects to load.
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for corrupt, truncated or non-pickle files
            raise ModelInputError(f"cannot read VGGish weights {self.weights_path}: {error}") from None
        # _vgg builds the architecture only; torchvggish.vggish() would download weights.
        model = _vgg(postprocess=False)
        _check_state_dict(state, model.state_dict(), self.weights_path)
        model.load_state_dict(state)
        model.embeddings = torch.nn.Sequential(*list(model.embeddings.children())[:-1])
        self.model = model.eval()
        self.description = (
            f"vggish: {self.dim}-d VGGish embeddings (no PCA, no final ReLU) per 0.96 s at {self.sample_rate} Hz, "
            f"weights {self.weights_path.name}; FAD values are comparable only with other VGGish values"
        )

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embeddings [examples, 128] float32, examples = floor(seconds / 0.96); at least 0.96 s of audio."""
        import torch
        from torchvggish.vggish_input import waveform_to_examples

        audio = mono_at(audio, sample_rate, self.sample_rate, self.example_samples, "vggish")
        with torch.no_grad():
            # waveform_to_examples returns a tensor that requires grad; detach it so nothing builds a graph.
            examples = waveform_to_examples(audio, self.sample_rate, return_tensor=True).detach()
            outputs = [
                self.model(examples[i : i + self.batch_examples]) for i in range(0, len(examples), self.batch_examples)
            ]
        return torch.cat(outputs).numpy().astype(np.float32, copy=False)


class MusicnnEmbedder:
    """musicnn's penultimate features: the 200-unit dense layer (after its ReLU and batch norm) that feeds the
    50 tag logits, one row per non-overlapping 3 s patch at 16 kHz; a partial last patch is dropped.

    It is what musicnn's own extractor returns as its "penultimate" feature (`bn_dense` in its models.py): the
    last layer before the tags, so it summarises what the tagger hears. The model is MSD_musicnn (Million Song
    Dataset tags: genres, moods, eras, instruments), ported from musicnn 0.1.0's checkpoint.
    """

    name = "musicnn"

    def __init__(self) -> None:
        from model.music_tagger import MusicnnTagger
        from model.musicnn import EMBEDDING_DIM, SAMPLE_RATE

        self.tagger = MusicnnTagger()
        self.sample_rate = SAMPLE_RATE
        self.dim = EMBEDDING_DIM
        self.description = (
            f"musicnn: {self.dim}-d penultimate-layer features of the pretrained {self.tagger.model} tagger "
            f"(musicnn 0.1.0's weights) per 3 s patch at {self.sample_rate} Hz; FAD values are comparable only "
            "with other 'musicnn' values"
        )

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Features [patches, 200] float32, patches = floor(frames / 187) with frames = 1 + samples // 256 at
        16 kHz; at least 2.976 s of audio."""
        return self.tagger.embeddings(audio, sample_rate)


def make_embedder(
    name: str, *, codec: EncodecModel | None = None, vggish_weights: str | Path | None = None
) -> Embedder:
    """The built-in embedder called `name` (one of EMBEDDERS); ModelInputError says what is missing."""
    if name == "mel":
        return MelEmbedder()
    if name == "encodec":
        if codec is None:
            raise ModelInputError(
                "encodec needs an EncodecModel to embed with (pass codec=, e.g. the run's trained codec)"
            )
        return CodecEmbedder(codec)
    if name == "vggish":
        if vggish_weights is None:
            raise ModelInputError(
                f"vggish needs the path of {VGGISH_FILE} (set evaluate.vggish_weights); no weights are downloaded"
            )
        return VGGishEmbedder(vggish_weights)
    if name == "musicnn":
        return MusicnnEmbedder()
    raise ModelInputError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
