"""How well a codec reconstructs held-out audio, measured through a transformers `EncodecModel`.

Per clip, then averaged: SI-SNR (dB; scale-invariant, so it judges the waveform's shape, phase included),
SNR (dB; 0 for silence, so above 0 beats outputting nothing), both torchmetrics' in float64, and the log-mel
distance (mean absolute difference of log10 mel power, 80 bands, 64 ms windows: 1.0 is a 10 dB error on
average). For a codec also `codes_used`: how many distinct codes each codebook spends on all the clips,
since a tokenizer whose codebooks collapse onto a few codes gives the language model little to learn, however
the audio sounds, and `frame_template_share`: how much of the decoder's output is one waveform repeated every
frame, whatever the codes. A decoder's upsampling turns constant offsets (biases) into such a template, heard
as a buzz at the frame rate and its harmonics (50, 100, 150 Hz ...: a dominant-seventh chord on G at 32 kHz /
640), and a log-mel loss hardly sees it: mel bands are wider than the comb's teeth. Where it dominates, the
codec carries no pitch and every generated clip sounds in the template's key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import EncodecModel

from components.codec.losses import MelSpectrogram, log_mel

METRICS = ("si_snr_db", "snr_db", "mel_distance")


def si_snr_db(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """Scale-invariant SNR; None when the estimate is constant (silence has no scale to fit)."""
    from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

    if not np.any(estimate - estimate.mean()):
        return None
    value = scale_invariant_signal_noise_ratio(_tensor(estimate), _tensor(reference))
    return float(value)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    from torchmetrics.functional.audio import signal_noise_ratio

    return float(signal_noise_ratio(_tensor(estimate), _tensor(reference)))


def _tensor(audio: np.ndarray) -> torch.Tensor:
    # float64: torchmetrics' epsilon is its dtype's, and float32's (1e-7) would shift the scores of quiet clips
    return torch.from_numpy(np.asarray(audio, dtype=np.float64))


class Scorer:
    """Scores reconstructions of a fixed list of clips against them."""

    def __init__(self, clips: list[np.ndarray], sample_rate: int) -> None:
        self.clips = [clip.astype(np.float64) for clip in clips]
        self.mel = MelSpectrogram(sample_rate, n_fft=2048, n_mels=80, hop_length=512)

    def mel_distance(self, reference: np.ndarray, estimate: np.ndarray) -> float:
        pair = torch.from_numpy(np.stack([reference, estimate]).astype(np.float32))
        with torch.no_grad():
            logs = log_mel(self.mel(pair))
        return float((logs[0] - logs[1]).abs().mean())

    def score(self, estimates: list[np.ndarray]) -> dict[str, float | None]:
        """The mean of each metric over the clips (SI-SNR None if undefined for any clip)."""
        rows = [
            (si_snr_db(clip, estimate), snr_db(clip, estimate), self.mel_distance(clip, estimate))
            for clip, estimate in zip(self.clips, estimates, strict=True)
        ]
        columns = dict(zip(METRICS, zip(*rows, strict=True), strict=True))
        return {name: None if None in values else float(np.mean(values)) for name, values in columns.items()}

    def silence(self) -> dict[str, float | None]:
        return self.score([np.zeros_like(clip) for clip in self.clips])

    def codec(self, model: EncodecModel) -> dict[str, Any]:
        estimates, codes = zip(*(reconstruct(model, clip) for clip in self.clips), strict=True)
        used = [len(np.unique(book)) for book in np.concatenate(codes, axis=-1)]
        return {**self.score(list(estimates)), "codes_used": used, "frame_template_share": frame_template_share(model)}


@torch.no_grad()
def frame_template_share(model: EncodecModel, frames: int = 250, seed: int = 0) -> float:
    """Share of the energy of random codes' decoded audio that is one frame-long waveform repeated every
    frame (the per-frame mean): near 0 for a decoder that follows its codes, 1 for a pure template."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    shape = (1, 1, model.config.num_quantizers, frames)
    codes = torch.randint(0, model.config.codebook_size, shape, generator=generator)
    audio = model.decode(codes, [None]).audio_values[0, 0].double().numpy()
    hop = int(np.prod(model.config.upsampling_ratios))
    periods = audio[: frames * hop].reshape(frames, hop)
    total = float(np.sum(periods**2))
    return float(frames * np.sum(periods.mean(axis=0) ** 2) / total) if total > 0 else 0.0


@torch.no_grad()
def reconstruct(model: EncodecModel, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode mono `audio` into all of the model's codebooks and decode it back: the audio at the same
    length, and the codes [codebooks, frames] (all chunks', for a chunked model)."""
    model.eval()
    signal = torch.from_numpy(audio.astype(np.float32))[None, None]
    encoded = model.encode(signal, bandwidth=model.config.target_bandwidths[-1])
    decoded = model.decode(
        encoded.audio_codes, encoded.audio_scales, last_frame_pad_length=encoded.last_frame_pad_length
    ).audio_values
    codes = torch.cat(list(encoded.audio_codes[:, 0]), dim=-1)
    return decoded[0, 0, : len(audio)].double().numpy(), codes.numpy()
