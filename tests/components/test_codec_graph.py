"""The codec's export rewrites compute what transformers' EnCodec modules compute, at every length."""

from __future__ import annotations

import pytest
import torch
from transformers.models.encodec.modeling_encodec import EncodecConv1d

from components.export.codec_graph import _reflect_pad, traceable_codec


@pytest.mark.parametrize("length", [1, 2, 3, 4, 7, 8, 40])
def test_reflect_padding_is_encodecs_at_every_length(length):
    x = torch.randn(2, 3, length)
    for left, right in [(3, 3), (6, 0), (0, 6), (1, 1), (2, 5), (0, 0)]:
        expected = EncodecConv1d._pad1d(x, (left, right), mode="reflect")
        assert torch.equal(_reflect_pad(x, left, right), expected), (left, right)


def test_the_rewritten_codec_decodes_what_transformers_decodes(micro):
    codec = micro.model.audio_encoder
    for frames in (1, 3, 20):
        codes = torch.randint(0, codec.config.codebook_size, (1, 2, codec.config.num_quantizers, frames))
        with torch.no_grad():
            expected = codec.decode(codes, [None]).audio_values
            with traceable_codec():
                got = codec.decode(codes, [None]).audio_values
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
