"""The codec under training: transformers' EnCodec networks around a trainable residual quantizer.

transformers' `EncodecModel` only runs inference: its codebooks start at zero and nothing updates them. So
training puts vector-quantize-pytorch's `ResidualVQ` (k-means initialisation, EMA codebook updates, dead-code
replacement, commitment loss, straight-through gradients) between the SEANet encoder and decoder of an
`EncodecModel`. Both quantizers are Euclidean residual VQs that take the nearest code layer by layer and sum
the codes, so the trained codebooks copy one to one into the `EncodecModel`, which is what everything
downstream loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import EncodecConfig, EncodecModel
from vector_quantize_pytorch import ResidualVQ

# Measured on the tiny preset's first 100 steps (batch 8 x 1 s): with EnCodec's 0.99, codebooks lag the moving
# encoder, and the first one collapsed onto one or two codes within 25 steps; at 0.9 (with a weak commitment
# loss, see components/codec/training.LOSS_WEIGHTS) 40 to 100 codes per codebook stayed in use over 200 frames.
EMA_DECAY = 0.9


@dataclass
class CodecOutput:
    audio: Tensor  # [batch, 1, samples], the reconstruction trimmed to the input's length
    codes: Tensor  # [batch, codebooks, frames]
    commitment: Tensor  # the quantizer's commitment loss (unweighted), averaged over codebooks


class TrainableCodec(nn.Module):
    """An `EncodecModel`'s encoder and decoder with a `ResidualVQ` in place of its inference-only quantizer."""

    def __init__(self, config: EncodecConfig, dead_code_threshold: float) -> None:
        super().__init__()
        if config.codebook_dim != config.hidden_size:
            raise ValueError("codebook_dim must equal hidden_size: the quantizer works on the encoder's output")
        self.encodec = EncodecModel(config)
        _kaiming_init(self.encodec.encoder)
        self.quantizer = ResidualVQ(
            dim=config.hidden_size,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            kmeans_init=True,
            decay=EMA_DECAY,
            threshold_ema_dead_code=dead_code_threshold,
            commitment_weight=1.0,  # weighted with the other losses, in train_codec
            rotation_trick=False,  # plain straight-through gradients, as EnCodec trains
        )

    def quantize(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantized embeddings [batch, dim, frames], codes [batch, codebooks, frames] and commitment loss."""
        embeddings = self.encodec.encoder(audio).transpose(1, 2)
        quantized, codes, losses = self.quantizer(embeddings)
        return quantized.transpose(1, 2), codes.transpose(1, 2), losses.mean()

    def forward(self, audio: Tensor) -> CodecOutput:
        quantized, codes, commitment = self.quantize(audio)
        decoded = self.encodec.decoder(quantized)[..., : audio.shape[-1]]
        return CodecOutput(decoded, codes, commitment)

    @torch.no_grad()
    def init_codebooks(self, batches: Iterable[Tensor]) -> None:
        """k-means initialisation of every codebook, layer by layer on the residuals, from the encoder's
        output on `batches` ([batch, 1, samples]); nothing else about the codebooks changes."""
        embeddings = torch.cat([self.encodec.encoder(audio).transpose(1, 2) for audio in batches])
        self.quantizer(embeddings, freeze_codebook=True)

    @torch.no_grad()
    def to_encodec(self) -> EncodecModel:
        """The `EncodecModel` holding the trained networks and, copied in, the trained codebooks."""
        for target, source in zip(self.encodec.quantizer.layers, self.quantizer.layers, strict=True):
            codebook = source._codebook  # ResidualVQ keeps one codebook (a leading axis of 1) per layer
            target.codebook.embed.copy_(codebook.embed[0])
            target.codebook.embed_avg.copy_(codebook.embed_avg[0])
            target.codebook.cluster_size.copy_(codebook.cluster_size[0])
        return self.encodec


@torch.no_grad()
def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights for every convolution in `module`.

    That is what transformers' `_init_weights` means to give them, but on a weight-normed convolution its
    in-place init lands on a computed tensor and is lost, leaving PyTorch's default, under which the signal
    shrinks about twofold per layer. The encoder's output then hardly varies with the audio: less than one
    optimizer step moves all of it, and after a few steps every frame falls on the same code. (The decoder
    keeps the default, so its first outputs are quiet rather than loud.)
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv1d):
            weight = torch.empty_like(conv.weight)
            nn.init.kaiming_normal_(weight)
            conv.weight = weight  # through weight norm's right_inverse, which sets magnitude and direction
