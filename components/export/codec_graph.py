"""How the EnCodec decoder is traced to ONNX: transformers' codec convolutions rewritten for the exporter.

transformers' EncodecConv1d pads with Python branches on the input's length, which torch.export can only
specialise to the example's length; the decoder's convolutions have few channels over many samples, so
in ONNX Runtime copies and gathers of whole signals cost as much as the convolutions. The rewrite here
computes the same numbers with shape arithmetic and gathers from the edges only; torch's eager generation
keeps transformers' own modules. (Transposed convolutions rewritten as stride-1 polyphase convolutions ran
slower in ONNX Runtime: 0.64 s against 0.52 s for a batch of 8 x 5 s.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F


def _gathered_reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """EnCodec's reflect padding (zero-extended first when the input is shorter than the pad) as one gather
    whose index follows the input length, so the graph serves every length, one frame included."""
    length = x.shape[-1]
    position = torch.arange(left + length + right) - left
    widest = max(left, right)
    span = (position[-1:] - right + 1).clamp(min=widest + 1)  # max(length, widest + 1), as a tensor
    index = torch.where(position < 0, -position, torch.where(position >= span, 2 * (span - 1) - position, position))
    return F.pad(x, (0, widest + 1)).index_select(-1, index)


def _reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """The same padding, gathered from the input's edges only: each padded side reads at most the
    max(left, right) + 1 samples at its end, so the gather runs on those and one concat copies the input.
    Gathering over the whole input (and zero-padding it first) made padding two thirds of encodec_decode's
    time in ONNX Runtime: the decoder's convolutions have few channels over many samples, so copies cost
    as much as the convolutions."""
    edge = max(left, right) + 1
    parts = [x]
    if left:
        parts.insert(0, _gathered_reflect_pad(x[..., :edge], left, right)[..., :left])
    if right:
        parts.append(_gathered_reflect_pad(x[..., -edge:], left, right)[..., -right:])
    return torch.cat(parts, dim=-1)


def _traceable_conv1d_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    # transformers' EncodecConv1d.forward computes its padding from tensors and pads with Python branches,
    # which torch.export can only specialise to the example's length; this is the same arithmetic on
    # shapes. Its stride-1 convolutions (all of the decoder's) need no extra padding.
    kernel = (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] + 1
    stride = self.conv.stride[0]
    total = kernel - stride
    extra = (-x.shape[-1]) % stride if stride > 1 else 0
    left, right = (total, extra) if self.causal else (total - total // 2, total // 2 + extra)
    x = _reflect_pad(x, left, right) if self.pad_mode == "reflect" else F.pad(x, (left, right), self.pad_mode)
    x = self.conv(x)
    return self.norm(x) if self.norm_type == "time_group_norm" else x


@contextlib.contextmanager
def traceable_codec() -> Iterator[None]:
    """transformers' EnCodec convolutions, while exporting, as graphs that serve every length and run fast
    in ONNX Runtime (the same arithmetic: tests/components/test_codec_graph.py)."""
    from transformers.models.encodec import modeling_encodec

    original = modeling_encodec.EncodecConv1d.forward
    modeling_encodec.EncodecConv1d.forward = _traceable_conv1d_forward
    try:
        yield
    finally:
        modeling_encodec.EncodecConv1d.forward = original
