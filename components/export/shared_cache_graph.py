"""Self-attention over a preallocated KV cache, exported as ONNX Runtime's GroupQueryAttention.

Optimum's `decoder_with_past_model` takes the cache as inputs and returns it one position longer: every
step ONNX Runtime copies the whole cache into new output arrays (at 8 guided prompts and 250 positions,
a quarter of the step's time). `decoder_with_shared_cache` instead takes cache buffers of a fixed capacity
and the current length; its self-attention is `com.microsoft::GroupQueryAttention` (num_heads ==
kv_num_heads: plain multi-head attention), which writes the new position into the buffer and attends over
the filled part. Bound as both input and output of one run (model/onnx_backend.py `OrtRunner.run_in_place`)
the buffer is shared, so a step appends one position instead of copying all of them.

The export traces `shared_cache_attention`, a torch custom op whose eager body is the reference
semantics, and `custom_translation_table` (`TRANSLATIONS`) turns it into the contrib op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx.defs import OpSchema
from onnxscript.values import Op, Opset
from torch import Tensor


@torch.library.custom_op("musicops::shared_cache_attention", mutates_args=())
def shared_cache_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    past_key: Tensor,
    past_value: Tensor,
    seqlens_k: Tensor,
    total_sequence_length: Tensor,
    num_heads: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """GroupQueryAttention's semantics, for n new positions of every row: query/key/value [rows, n, hidden],
    cache buffers [rows, heads, capacity, head_dim] holding `total_sequence_length - n` positions; the new
    keys and values go to the next n slots. Returns the attention output [rows, n, hidden] and the buffers
    with the new positions written. (`seqlens_k`, total length - 1 per row, is what ONNX Runtime reads;
    here every row has the same length.)"""
    n, end = query.shape[1], int(total_sequence_length)
    keys, values = past_key.clone(), past_value.clone()
    keys[:, :, end - n : end] = key.unflatten(-1, (num_heads, -1)).transpose(1, 2)
    values[:, :, end - n : end] = value.unflatten(-1, (num_heads, -1)).transpose(1, 2)
    q = query.unflatten(-1, (num_heads, -1)).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], is_causal=n > 1)
    return out.transpose(1, 2).flatten(2), keys, values


@shared_cache_attention.register_fake
def _(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, num_heads):
    return torch.empty_like(query), torch.empty_like(past_key), torch.empty_like(past_value)


def _schema() -> OpSchema:
    # onnxscript builds nodes from an OpSchema; ONNX Runtime's contrib ops are not in onnx's registry.
    param = OpSchema.FormalParameter
    names = ("query", "key", "value", "past_key", "past_value")
    return OpSchema(
        "GroupQueryAttention",
        "com.microsoft",
        1,
        inputs=[*(param(name, "T") for name in names), param("seqlens_k", "M"), param("total_sequence_length", "M")],
        outputs=[param("output", "T"), param("present_key", "T"), param("present_value", "T")],
        type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[
            OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "query heads"),
            OpSchema.Attribute("kv_num_heads", OpSchema.AttrType.INT, "key/value heads"),
        ],
    )


_GROUP_QUERY_ATTENTION = Op(Opset("com.microsoft", 1), "GroupQueryAttention", _schema())


def _group_query_attention(query, key, value, past_key, past_value, seqlens_k, total_sequence_length, num_heads: int):
    return _GROUP_QUERY_ATTENTION(
        query,
        key,
        value,
        past_key,
        past_value,
        seqlens_k,
        total_sequence_length,
        num_heads=num_heads,
        kv_num_heads=num_heads,
    )


TRANSLATIONS = {torch.ops.musicops.shared_cache_attention.default: _group_query_attention}


def self_attention(
    layer: torch.nn.Module,
    x: Tensor,
    past_key: Tensor,
    past_value: Tensor,
    seqlens_k: Tensor,
    total_sequence_length: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """A `MusicgenDecoderLayer`'s self-attention block (norm, attention, residual) over cache buffers: the
    block's output and the buffers with the new positions."""
    attn = layer.self_attn
    h = layer.self_attn_layer_norm(x)
    q, k, v = (F.linear(h, proj.weight, proj.bias) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    out, keys, values = shared_cache_attention(
        q, k, v, past_key, past_value, seqlens_k, total_sequence_length, attn.num_heads
    )
    return x + F.linear(out, attn.out_proj.weight, attn.out_proj.bias), keys, values
