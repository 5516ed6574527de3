"""MusicGen's delay pattern: codebook k is shifted right by k+1 steps, so one decoding step per frame.

Column 0 holds the start token for every codebook; codebook k's frame t sits at column t + k + 1.
A sequence of T frames therefore takes T + K columns, and the positions no frame fills hold the
special token (the codebook size). `tests/model/test_delay_pattern.py` round-trips this against
transformers' own `build_delay_pattern_mask`.
"""

from __future__ import annotations

import torch


def valid_positions(num_codebooks: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [K, width]: True where a real code sits in a delayed sequence of `width` columns."""
    column = torch.arange(width, device=device)[None, :]
    codebook = torch.arange(num_codebooks, device=device)[:, None]
    return (column > codebook) & (column <= width - num_codebooks + codebook)


def build_delay_pattern(codes: torch.Tensor, special: int) -> torch.Tensor:
    """Codes [B, K, T] -> delayed [B, K, T + K] with `special` where no code sits."""
    batch, num_codebooks, frames = codes.shape
    delayed = codes.new_full((batch, num_codebooks, frames + num_codebooks), special)
    for k in range(num_codebooks):
        delayed[:, k, k + 1 : k + 1 + frames] = codes[:, k]
    return delayed


def revert_delay_pattern(delayed: torch.Tensor) -> torch.Tensor:
    """Delayed [B, K, T + K] -> codes [B, K, T]."""
    num_codebooks = delayed.shape[1]
    frames = delayed.shape[2] - num_codebooks
    return torch.stack([delayed[:, k, k + 1 : k + 1 + frames] for k in range(num_codebooks)], dim=1)
