"""INT8: the export's graphs with dynamically quantized weights (the int8/ folder), checked against torch."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from components.export.parity import GraphParity, ParityInputs, _require, check_graph
from components.export.writing import _copy_model_files, _quiet_logger
from model.onnx_backend import CODEC_DECODER, EXPORTED_GRAPHS, OrtRunner
from settings.params import ExportParams


def quantize_graph(source: Path, target: Path) -> None:
    """Dynamic INT8: weights of MatMul/Gemm stored as QInt8, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs a suggestion to pre-process (shape inference) on the root logger for every graph.
    with _quiet_logger(logging.getLogger(), logging.ERROR):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            # per-channel ranges keep small-valued output channels from rounding to zero
            per_channel=True,
            # 7-bit weights: on x86 CPUs without VNNI (AVX2, plain AVX-512) ONNX Runtime's u8 x s8 kernel sums
            # pairs in 16 bits (vpmaddubsw), which saturates with 8-bit weights; the micro model's decoder logits
            # moved 0.24 there against 0.006 on a VNNI CPU. With reduce_range the export is right on every CPU.
            reduce_range=True,
            use_external_data_format=source.with_name(f"{source.name}.data").exists(),
        )


def write_int8(
    fp32: Path,
    folder: Path,
    model_dir: Path,
    data: ParityInputs,
    layers: int,
    params: ExportParams,
    grid_frame_rate: float | None = None,
) -> dict[str, GraphParity]:
    """The int8/ folder: quantized text encoder and decoders, the fp32 codec decoder, the model files;
    checked against torch with the INT8 bound."""
    folder.mkdir()
    for graph in EXPORTED_GRAPHS:
        source = fp32 / f"{graph}.onnx"
        if graph == CODEC_DECODER:  # convolutions and an LSTM: MatMul/Gemm quantization would skip most of it
            for path in fp32.glob(f"{graph}.onnx*"):
                shutil.copy2(path, folder / path.name)
        else:
            quantize_graph(source, folder / source.name)
    _copy_model_files(model_dir, folder, grid_frame_rate)
    runner = OrtRunner(folder)
    parity = {graph: check_graph(runner, graph, data, layers, params.int8_tolerance) for graph in EXPORTED_GRAPHS}
    for graph, result in parity.items():
        _require(graph, result, "int8")
    return parity
