"""A codec stand-in whose audio spells out the codes it decodes.

The micro model's codec has all-zero codebooks (as an untrained EnCodec has), so it makes the same audio of any
codes: a test that must tell tokens apart by the audio a server streams (two seeds, a row alone or in a batch)
gives its generator this decoder instead.
"""

from __future__ import annotations

import numpy as np
import torch

from model.generator import BaseMusicGenerator


def spell_codes(generator: BaseMusicGenerator) -> BaseMusicGenerator:
    """`generator`, decoding codes [B, K, frames] to audio [B, frames * hop] whose sample j of each frame is the
    code of codebook j mod K divided by the number of codes: tokens that differ anywhere make audio that differs
    there by more than a float's rounding (1/65 on the micro model)."""
    hop, codebooks = generator.hop_length, generator.num_codebooks
    scale = generator.decoder.lm.config.vocab_size + 1.0  # the codes and the special token
    spread = torch.arange(hop) % codebooks

    def decode_audio(codes: torch.Tensor) -> np.ndarray:
        per_sample = codes.float()[:, spread, :] / scale  # [B, hop, frames]
        return per_sample.transpose(1, 2).reshape(codes.shape[0], -1).numpy()

    generator.decode_audio = decode_audio
    return generator
