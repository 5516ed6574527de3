"""Stage `export`: a trained MusicGen as ONNX graphs in Hugging Face Optimum's layout, parity-checked.

    python -m components.export --params params.yaml --model artifacts/model --out artifacts/onnx

Output folder (published whole or not at all):

    text_encoder.onnx, decoder_model.onnx, decoder_with_past_model.onnx, encodec_decode.onnx
        Optimum's MusicGen file, tensor and axis names; model/onnx_backend.py lists every input and output.
        decoder logits are [total_batch_size_x_num_codebooks, decoder_sequence_length, vocab], as
        transformers returns them (row b*K + k is codebook k of batch row b).
    beat_grid.json
        only for a decoder with a beat grid (train.beat_grid): its decoder graphs take the grid's
        features as one more input, `beat_grid` [total_batch_size, decoder_sequence_length, 6]
        (model/beat_grid.py), which the generators compute from each prompt's tempo.
    decoder_with_shared_cache.onnx
        ours: the cached step over fixed-capacity cache buffers that ONNX Runtime appends to in place
        (components/export/shared_cache_graph.py); the ONNX Runtime backend's cached step where it can bind them.
    config.json, generation_config.json, tokenizer and processor files, musicops.json (the model card)
        so the folder generates on its own (`OnnxMusicGenerator.load(folder)`), with no torch weights.
    export.json    opset, per-graph parity against torch, file sizes, source model and its data version.
    int8/          (export.int8) the same names and files: text encoder and decoders with dynamically
                   quantized weights (QInt8, MatMul/Gemm), encodec_decode kept fp32; its export.json
                   reports the measured INT8-vs-torch differences.

Optimum-onnx does not install beside this transformers, so the graphs are written here: the text
encoder and the decoders with torch's dynamo exporter; the decoders run the same per-layer code as
generation (model/decoder_step.py), taking the cache as inputs and returning it as outputs, with
attention as two matrix products (`matmul_attention`: what ONNX Runtime runs without copying the
cache). Parity runs every graph in ONNX Runtime on real inputs (tokenized prompts of different lengths
with padding, a guided batch whose unconditional rows are zero states with a zero mask as
model/decoding.py builds them, codes from a short generation) against transformers' own modules; a
breach raises ParityError naming the graph and nothing is published. Exit status of the CLI: 2 for bad
input, 1 for a failed parity check.

The package, in the order the stage runs it (each module imports only those above it):

    errors.py              ExportError and ParityError
    graphs.py              the torch modules that become graphs, and what torch.onnx.export needs for each
        codec_graph.py         the EnCodec decoder rewritten for the exporter
        shared_cache_graph.py  the self-attention exported as ONNX Runtime's GroupQueryAttention
    writing.py             writing one graph, and the model files beside the graphs
    parity.py              each graph in ONNX Runtime against transformers' modules
    int8.py                the int8/ folder: dynamically quantized graphs, checked in turn
    stage.py               `export`, the stage itself, and `main`, its command line (__main__.py runs it)
"""

from components.export.errors import ExportError, ParityError
from components.export.graphs import (
    CodecDecoderGraph,
    DecoderGraph,
    DecoderWithPastGraph,
    DecoderWithSharedCacheGraph,
    GraphSpec,
    TextEncoderGraph,
    graph_specs,
)
from components.export.int8 import quantize_graph, write_int8
from components.export.parity import (
    CACHED_STEPS,
    GUIDANCE,
    PROMPTS,
    GraphParity,
    ParityInputs,
    check_graph,
    parity_inputs,
)
from components.export.stage import EXPORT_FILE, INT8_DIR, ExportReport, app, export, main
from components.export.writing import WEIGHT_SUFFIXES, export_graph
from model.onnx_backend import TEXT_ENCODER  # the graph's name, imported from here before the package split

# `from components.export import export` gives the stage function: no submodule may be named `export`, as
# importing it would replace this attribute with the module.
__all__ = [
    "CACHED_STEPS",
    "EXPORT_FILE",
    "GUIDANCE",
    "INT8_DIR",
    "PROMPTS",
    "TEXT_ENCODER",
    "WEIGHT_SUFFIXES",
    "CodecDecoderGraph",
    "DecoderGraph",
    "DecoderWithPastGraph",
    "DecoderWithSharedCacheGraph",
    "ExportError",
    "ExportReport",
    "GraphParity",
    "GraphSpec",
    "ParityError",
    "ParityInputs",
    "TextEncoderGraph",
    "app",
    "check_graph",
    "export",
    "export_graph",
    "graph_specs",
    "main",
    "parity_inputs",
    "quantize_graph",
    "write_int8",
]
