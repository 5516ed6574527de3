"""Export stage: Optimum's file, tensor and axis names, parity of every graph, INT8, and failures that publish nothing.

The micro model is exported once per session (about 25 s with INT8); tests/model/test_onnx_backend.py
generates from the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from components.export import ExportReport, ParityError, app, export, graphs
from components.export.errors import ExportError
from components.export.parallel import export_graphs, specs_of
from model.checkpoint import load_model
from model.errors import ModelInputError
from model.onnx_backend import EXPORTED_GRAPHS
from settings.params import ExportParams, ParamsError

pytestmark = pytest.mark.integration


@pytest.fixture
def exported(micro_export) -> ExportReport:
    return micro_export


def _io(path: Path) -> tuple[dict, dict]:
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        return {
            v.name: (
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        }

    return describe(graph.input), describe(graph.output)


INT64, INT32, FLOAT = onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.FLOAT


def test_graphs_have_optimums_names_types_and_axes(exported, micro):
    config = micro.model.config
    layers, heads = config.decoder.num_hidden_layers, config.decoder.num_attention_heads
    head_dim, text = config.decoder.hidden_size // heads, config.text_encoder.hidden_size
    vocab, K = config.decoder.vocab_size, config.decoder.num_codebooks
    batch, text_len = "total_batch_size", "encoder_sequence_length"
    rows = "total_batch_size_x_num_codebooks"
    for folder in (exported.out_dir, exported.out_dir / "int8"):
        inputs, outputs = _io(folder / "text_encoder.onnx")
        assert inputs == {
            "input_ids": (INT64, ["batch_size", text_len]),
            "attention_mask": (INT64, ["batch_size", text_len]),
        }
        assert outputs == {"last_hidden_state": (FLOAT, ["batch_size", text_len, text])}

        inputs, outputs = _io(folder / "decoder_model.onnx")
        assert inputs == {
            "decoder_input_ids": (INT64, [rows, "decoder_sequence_length"]),
            "encoder_outputs": (FLOAT, [batch, text_len, text]),
            "attention_mask": (INT64, [batch, text_len]),
        }
        expected = {"logits": (FLOAT, [rows, "decoder_sequence_length", vocab])}
        for i in range(layers):
            for kind in ("key", "value"):
                expected[f"present.{i}.decoder.{kind}"] = (FLOAT, [batch, heads, "decoder_sequence_length", head_dim])
                expected[f"present.{i}.encoder.{kind}"] = (FLOAT, [batch, heads, text_len, head_dim])
        assert outputs == expected
        assert list(outputs)[:5] == [
            "logits",
            "present.0.decoder.key",
            "present.0.decoder.value",
            "present.0.encoder.key",
            "present.0.encoder.value",
        ]

        inputs, outputs = _io(folder / "decoder_with_past_model.onnx")
        expected_in = {"decoder_input_ids": (INT64, [rows, 1]), "attention_mask": (INT64, [batch, text_len])}
        expected_out = {"logits": (FLOAT, [rows, 1, vocab])}
        for i in range(layers):
            for kind in ("key", "value"):
                expected_in[f"past_key_values.{i}.decoder.{kind}"] = (
                    FLOAT,
                    [batch, heads, "past_decoder_sequence_length", head_dim],
                )
                expected_in[f"past_key_values.{i}.encoder.{kind}"] = (FLOAT, [batch, heads, text_len, head_dim])
                expected_out[f"present.{i}.decoder.{kind}"] = (
                    FLOAT,
                    [batch, heads, "past_decoder_sequence_length + 1", head_dim],
                )
        assert inputs == expected_in
        assert outputs == expected_out

        inputs, outputs = _io(folder / "decoder_with_shared_cache.onnx")
        buffer = (FLOAT, [batch, heads, "cache_capacity", head_dim])
        expected_in = {
            "decoder_input_ids": (INT64, [rows, 1]),
            "attention_mask": (INT64, [batch, text_len]),
            "seqlens_k": (INT32, [batch]),
            "total_sequence_length": (INT32, []),
        }
        expected_out = {"logits": (FLOAT, [rows, 1, vocab])}
        for i in range(layers):
            for kind in ("key", "value"):
                expected_in[f"past_key_values.{i}.decoder.{kind}"] = buffer
                expected_in[f"past_key_values.{i}.encoder.{kind}"] = (FLOAT, [batch, heads, text_len, head_dim])
                expected_out[f"present.{i}.decoder.{kind}"] = buffer
        assert inputs == expected_in
        assert outputs == expected_out

        inputs, outputs = _io(folder / "encodec_decode.onnx")
        assert inputs == {"audio_codes": (INT64, [1, "batch_size", K, "chunk_length"])}
        assert outputs == {"audio_values": (FLOAT, ["batch_size", 1, "audio_length"])}


def test_every_graph_passes_parity_and_the_report_says_so(exported, micro_dir):
    for graph, parity in exported.parity.items():
        assert parity.passed and parity.relative < 1e-4, (graph, parity)
    for graph, parity in exported.int8_parity.items():
        assert parity.passed and np.isfinite(parity.max_abs_diff), (graph, parity)
    # the codec decoder is kept fp32 in int8/, so it is as exact there
    assert exported.int8_parity["encodec_decode"].relative < 1e-4
    manifest = json.loads((exported.out_dir / "export.json").read_text())
    assert manifest["opset"] == 20 and manifest["data_version"] == "test" and manifest["int8_folder"] == "int8"
    assert manifest["source_model"] == str(micro_dir.resolve())
    assert set(manifest["graphs"]) == set(EXPORTED_GRAPHS)
    for graph, entry in manifest["graphs"].items():
        assert entry["bytes"] == (exported.out_dir / entry["file"]).stat().st_size > 0
        assert entry["parity"]["relative"] == exported.parity[graph].relative
    int8 = json.loads((exported.out_dir / "int8" / "export.json").read_text())
    assert int8["int8"] is True and int8["quantization"]["kept_fp32"] == ["encodec_decode"]
    assert int8["graphs"]["decoder_model"]["bytes"] < manifest["graphs"]["decoder_model"]["bytes"]
    print({g: f"{p.relative:.2e}" for g, p in exported.parity.items()})
    print({g: f"{p.relative:.2e}" for g, p in exported.int8_parity.items()})


def test_the_folder_generates_on_its_own(exported, micro_dir):
    for folder in (exported.out_dir, exported.out_dir / "int8"):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "generation_config.json", "tokenizer.json", "musicops.json", "export.json"} <= names
        assert not any(name.endswith(".safetensors") for name in names)
    card = json.loads((exported.out_dir / "musicops.json").read_text())
    assert card == json.loads((micro_dir / "musicops.json").read_text())


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_a_bad_model_directory_is_named_and_nothing_is_written(tmp_path, case):
    source = tmp_path / "model"
    if case == "corrupt":
        source.mkdir()
        (source / "config.json").write_text("{not json")
    out = tmp_path / "out" / "onnx"
    with pytest.raises(ModelInputError, match="does not exist" if case == "missing" else "cannot load the model"):
        export(source, out, ExportParams())
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_parity_breach_names_the_graph_and_publishes_nothing(micro_dir, tmp_path):
    out = tmp_path / "onnx"
    # fp32 measures ~5e-7 on the text encoder: a bound far below it must fail there, first
    with pytest.raises(ParityError, match=r"text_encoder \(fp32\).*nothing was published"):
        export(micro_dir, out, ExportParams(tolerance=1e-12, int8=False, workers=1))
    assert list(tmp_path.iterdir()) == []


def test_a_decoder_that_differs_from_torch_fails_at_decoder_model(micro_dir, tmp_path, monkeypatch):
    # An export defect (here: a perturbed weight inside the exported decoder graph) must be caught
    # by comparing with transformers' own forward, not with our wrapper.
    original = graphs.DecoderGraph.forward

    def perturbed(self, decoder_input_ids, encoder_outputs, attention_mask):
        outputs = original(self, decoder_input_ids, encoder_outputs, attention_mask)
        return (outputs[0] + 1e-2, *outputs[1:])

    monkeypatch.setattr(graphs.DecoderGraph, "forward", perturbed)
    out = tmp_path / "onnx"
    with pytest.raises(ParityError, match=r"decoder_model \(fp32\).*0\.01"):
        export(micro_dir, out, ExportParams(int8=False, workers=1))  # in-process: the patched forward is exported
    assert list(tmp_path.iterdir()) == []


def test_a_failing_export_worker_is_named_and_its_siblings_graphs_still_written(micro_dir, tmp_path):
    model, processor, _ = load_model(micro_dir)
    every = specs_of(model, processor)
    specs = {name: every[name] for name in ("text_encoder", "encodec_decode")}
    # The worker takes text_encoder but reads its model from a folder that has none; this process writes the codec.
    with pytest.raises(ExportError, match=f"ModelInputError.*{tmp_path / 'missing'}"):
        export_graphs(specs, tmp_path / "missing", tmp_path, 20, workers=2)
    assert [path.name for path in tmp_path.glob("*.onnx")] == ["encodec_decode.onnx"]


def test_params_are_checked():
    with pytest.raises(ParamsError, match="opset"):
        ExportParams(opset=13).check()
    with pytest.raises(ParamsError, match="tolerance"):
        ExportParams(tolerance=0.0).check()


def test_cli_reports_a_missing_model_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("export:\n  int8: false\n")
    out = tmp_path / "onnx"
    result = CliRunner().invoke(app, ["--params", str(params), "--model", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "does not exist" in result.output
    assert not out.exists()


def test_additive_mask_gives_zero_for_rows_without_text():
    # the graphs' finite mask floor and torch's boolean SDPA agree on an unconditional row of zero states
    q = torch.randn(2, 2, 3, 8)
    keys, values = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1] = 0
    keys[1], values[1] = 0, 0
    ours = torch.nn.functional.scaled_dot_product_attention(
        q, keys, values, attn_mask=graphs._additive_mask(mask, torch.float32)
    )
    theirs = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask.bool()[:, None, None])
    assert torch.allclose(ours, theirs, atol=1e-6) and not ours[1].any()


def _cache_readers(path: Path, tmp_path: Path) -> set[str]:
    """Node types that read the decoder cache in ONNX Runtime's optimized version of the graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"optimized-{path.name}")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    cache = {v.name for v in graph.input if v.name.startswith("past_key_values.")}
    cache |= {v.name for v in graph.output if v.name.startswith("present.")}
    return {node.op_type for node in graph.node if set(node.input) & cache}


def test_the_cached_steps_read_their_cache_without_copying_it(exported, tmp_path):
    # After ONNX Runtime's own graph optimizations, each cached key and value of decoder_with_past feeds a
    # matrix product directly; its only copy is the Concat that appends the new position. A Transpose or
    # Reshape there would copy the whole cache every step (what the exporter's SDPA decomposition did).
    readers = _cache_readers(exported.out_dir / "decoder_with_past_model.onnx", tmp_path)
    assert readers <= {"Concat", "MatMul", "FusedMatMul", "Shape"}, readers
    assert "FusedMatMul" in readers  # the keys' transpose folded into the product
    # decoder_with_shared_cache: the self-attention's buffers go to GroupQueryAttention alone, no Concat
    readers = _cache_readers(exported.out_dir / "decoder_with_shared_cache.onnx", tmp_path)
    assert readers == {"GroupQueryAttention", "MatMul", "FusedMatMul"}, readers  # (the text's keys: products)
