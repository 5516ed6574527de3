"""Read the float tensors of a TensorFlow checkpoint (a tensor bundle) without TensorFlow.

A bundle is `PREFIX.index`, a LevelDB-format table mapping each variable's name to a `BundleEntryProto`
(dtype, shape, shard, offset, size), and `PREFIX.data-00000-of-0000N`, the raw little-endian tensor bytes.
TensorFlow writes the index uncompressed; the table format and the two protos are small enough to decode
here (tensorflow/core/util/tensor_bundle/, tensorflow/core/protobuf/tensor_bundle.proto), which spares the
project a TensorFlow install just to read a few megabytes of weights once.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.errors import ModelInputError

_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the footer's last 8 bytes
_FOOTER_BYTES = 48
_BLOCK_TRAILER_BYTES = 5  # a compression-type byte and a CRC after every block
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TensorFlow's DataType enum


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _proto_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, length-delimited fields as bytes."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield field, value
        elif wire == 2:
            size, at = _varint(data, at)
            yield field, data[at : at + size]
            at += size
        elif wire in (1, 5):  # fixed64, fixed32 (the entries' CRC): not needed here
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _block_entries(data: bytes, offset: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    """A table block's (key, value) pairs; keys are stored as a shared prefix length and a new suffix."""
    if data[offset + size] != 0:
        raise ValueError("compressed table blocks are not supported")
    block = data[offset : offset + size]
    restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * restarts
    at, key = 0, b""
    while at < end:
        shared, at = _varint(block, at)
        fresh, at = _varint(block, at)
        value_size, at = _varint(block, at)
        key = key[:shared] + block[at : at + fresh]
        at += fresh
        yield key, block[at : at + value_size]
        at += value_size


def _entry(proto: bytes) -> tuple[int, tuple[int, ...], int, int, int]:
    """dtype, shape, shard, offset and size of a BundleEntryProto."""
    dtype = shard = offset = size = 0
    shape: list[int] = []
    for field, value in _proto_fields(proto):
        if field == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif field == 2:
            for dim_field, dim in _proto_fields(value):  # type: ignore[arg-type]
                if dim_field == 2:  # TensorShapeProto.dim; its field 1 is the size
                    shape.extend(int(v) for f, v in _proto_fields(dim) if f == 1)  # type: ignore[arg-type]
        elif field == 3:
            shard = int(value)  # type: ignore[arg-type]
        elif field == 4:
            offset = int(value)  # type: ignore[arg-type]
        elif field == 5:
            size = int(value)  # type: ignore[arg-type]
    return dtype, tuple(shape), shard, offset, size


def _index_entries(index: bytes) -> Iterator[tuple[str, bytes]]:
    if len(index) < _FOOTER_BYTES or struct.unpack_from("<Q", index, len(index) - 8)[0] != _TABLE_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (no table footer)")
    footer = index[-_FOOTER_BYTES:]
    _, at = _varint(footer, 0)  # the metaindex block's handle: empty in a bundle
    _, at = _varint(footer, at)
    index_offset, at = _varint(footer, at)
    index_size, _ = _varint(footer, at)
    for _, handle in _block_entries(index, index_offset, index_size):
        offset, at = _varint(handle, 0)
        size, _ = _varint(handle, at)
        if offset + size + _BLOCK_TRAILER_BYTES > len(index):
            raise ValueError("a block lies past the end of the index")
        for key, value in _block_entries(index, offset, size):
            if key:  # the empty key holds the BundleHeaderProto, not a tensor
                yield key.decode(), value


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of the checkpoint `prefix` (the path without `.index`) as a numpy array in TensorFlow's
    layout, e.g. a conv2d kernel [height, width, in, out]. ModelInputError when the files are missing or corrupt."""
    prefix = str(prefix)
    try:
        index = Path(prefix + ".index").read_bytes()
        shards: dict[int, bytes] = {}
        tensors = {}
        for name, proto in _index_entries(index):
            dtype, shape, shard, offset, size = _entry(proto)
            if dtype not in _DTYPES:
                continue  # strings and other types hold no weights
            if shard not in shards:
                # A prefix may end in a separator (musicnn's do: the files are `.index`, `.data-...`), so
                # split it as a string; Path would drop the empty name.
                folder, stem = os.path.split(prefix)
                found = sorted(Path(folder).glob(f"{stem}.data-{shard:05d}-of-*"))
                if not found:
                    raise ValueError(f"data shard {shard} is missing")
                shards[shard] = found[0].read_bytes()
            dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
            count = int(np.prod(shape))
            if size != count * dt.itemsize or offset + size > len(shards[shard]):
                raise ValueError(f"{name}: {size} bytes at {offset} do not hold shape {shape}")
            array = np.frombuffer(shards[shard], dtype=dt, count=count, offset=offset)
            tensors[name] = array.reshape(shape).astype(dt.newbyteorder("="))
    except (OSError, ValueError, IndexError, struct.error) as error:
        raise ModelInputError(f"cannot read the TensorFlow checkpoint {prefix}: {error}") from None
    return tensors
