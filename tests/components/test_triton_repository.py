"""The Triton model repository: configs Triton's ModelConfig accepts, taken from the graphs, and the streaming model.

No Triton server runs here (none installs on this machine): the configs are checked against tritonclient's
ModelConfig protobuf, musicgen's model.py against a stand-in for `triton_python_backend_utils` whose BLS calls run
the repository's ONNX files in ONNX Runtime, and TritonClientRunner's HTTP path against a minimal V2 endpoint.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import py_compile
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype
from typer.testing import CliRunner

from components import triton_repository as tr
from components.triton_repository import TritonRepositoryError, TritonSettings, write_repository
from serving.triton import client_runner
from serving.triton.client_runner import TritonClientRunner
from settings.params import ParamsError, load_section

HIDDEN, VOCAB, LAYERS, HEADS, HEAD_DIM, CODEBOOKS, HOP = 8, 16, 2, 2, 4, 4, 10
ROOT = Path(__file__).resolve().parents[1]
ONNX_MODELS = ("text_encoder", "decoder", "decoder_with_past", "codec_decoder")


# -- a synthetic export with Optimum's file and tensor names -------------------------------------------------------


def _io(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _model(nodes, inputs, outputs, initialisers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initialisers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    # raw_data (what numpy_helper writes) is what onnx moves into external data files.
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def text_encoder() -> onnx.ModelProto:
    # last_hidden_state[b, s, :] = input_ids * mask * weight: runnable, with a weight to store as external data.
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("Cast", ["masked"], ["masked_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["masked_f", "axis2"], ["column"]),
        helper.make_node("Mul", ["column", "weight"], ["last_hidden_state"]),
    ]
    weight = _const("weight", np.arange(1, HIDDEN + 1), np.float32)
    return _model(
        nodes,
        [
            _io("input_ids", TensorProto.INT64, ["batch", "seq"]),
            _io("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [_io("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [weight, _const("axis2", [2])],
    )


def encodec_decode() -> onnx.ModelProto:
    # audio [b, 1, frames * HOP]: each frame's code sum held for HOP samples. audio_codes is [1, batch, K, frames].
    nodes = [
        helper.make_node("Cast", ["audio_codes"], ["codes_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["codes_f", "axis2"], ["summed"], keepdims=1),  # [1, b, 1, f]
        helper.make_node("Squeeze", ["summed", "axis0"], ["frames"]),  # [b, 1, f]
        helper.make_node("Unsqueeze", ["frames", "axis3"], ["frames4"]),  # [b, 1, f, 1]
        helper.make_node("Tile", ["frames4", "repeats"], ["held"]),  # [b, 1, f, HOP]
        helper.make_node("Reshape", ["held", "shape"], ["audio_values"]),
    ]
    consts = [_const("axis0", [0]), _const("axis2", [2]), _const("axis3", [3])]
    consts += [_const("repeats", [1, 1, 1, HOP]), _const("shape", [0, 1, -1])]
    return _model(
        nodes,
        [_io("audio_codes", TensorProto.INT64, [1, "batch", CODEBOOKS, "frames"])],
        [_io("audio_values", TensorProto.FLOAT, ["batch", 1, "samples"])],
        consts,
    )


def _decoder(with_past: bool) -> onnx.ModelProto:
    # Interface only (never run): every output comes from a constant.
    inputs = [_io("decoder_input_ids", TensorProto.INT64, ["batch_x_codebooks", 1 if with_past else "seq"])]
    if not with_past:
        inputs.append(_io("encoder_outputs", TensorProto.FLOAT, ["batch", "enc_seq", HIDDEN]))
    inputs.append(_io("attention_mask", TensorProto.INT64, ["batch", "enc_seq"]))
    outputs = [_io("logits", TensorProto.FLOAT, ["batch_x_codebooks", 1 if with_past else "seq", VOCAB])]
    for i in range(LAYERS):
        for part in ("decoder", "encoder"):
            length = "enc_seq" if part == "encoder" else ("past_seq" if with_past else "seq")
            for kind in ("key", "value"):
                if with_past:
                    inputs.append(
                        _io(f"past_key_values.{i}.{part}.{kind}", TensorProto.FLOAT, ["batch", HEADS, length, HEAD_DIM])
                    )
                if part == "decoder" or not with_past:
                    out_length = "past_seq_plus_1" if with_past else length
                    outputs.append(
                        _io(f"present.{i}.{part}.{kind}", TensorProto.FLOAT, ["batch", HEADS, out_length, HEAD_DIM])
                    )
    nodes = [
        helper.make_node("Constant", [], [o.name], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
        for o in outputs
    ]
    return _model(nodes, inputs, outputs)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "onnx"
    folder.mkdir()
    onnx.save_model(
        text_encoder(),
        str(folder / "text_encoder.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="text_encoder.onnx_data",
        size_threshold=64,  # the weight only: ONNX Runtime wants the small axis constants inline
    )
    onnx.save_model(_decoder(with_past=False), str(folder / "decoder_model.onnx"))
    onnx.save_model(_decoder(with_past=True), str(folder / "decoder_with_past_model.onnx"))
    onnx.save_model(_decoder(with_past=False), str(folder / "decoder_model_merged.onnx"))  # Optimum's, unused
    onnx.save_model(encodec_decode(), str(folder / "encodec_decode.onnx"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "export.json"):
        (folder / name).write_text("{}\n")
    (folder / "vocab.txt").write_text("[PAD]\njazz\n")
    (folder / "musicops.json").write_text(json.dumps({"preset": "test", "max_duration_seconds": 20.0}))
    return folder


@pytest.fixture
def repo(export_dir: Path, tmp_path: Path) -> Path:
    return write_repository(export_dir, tmp_path / "triton", TritonSettings())


def read_config(path: Path):
    return tr.parse_config(path.read_text())


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _expected_dims(value: onnx.ValueInfoProto, batched: bool) -> list[int]:
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    return dims[1:] if batched else dims


def _triton_type(elem: int) -> str:
    return "TYPE_" + np_to_triton_dtype(helper.tensor_dtype_to_np_dtype(elem))


# -- configs -------------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_every_config_parses_as_tritons_model_config(repo: Path):
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert [c.parent.name for c in configs] == sorted([*ONNX_MODELS, "musicgen"])
    for path in configs:
        config = read_config(path)
        assert type(config).DESCRIPTOR.full_name == "inference.ModelConfig"
        assert config.name == path.parent.name


@pytest.mark.unit
def test_a_misspelled_field_or_value_fails_the_parse(repo: Path):
    text = (repo / "text_encoder" / "config.pbtxt").read_text()
    for typo in (("max_batch_size", "max_batch_sise"), ("TYPE_INT64", "TYPE_INT46"), ("instance_group", "instances")):
        assert typo[0] in text
        with pytest.raises(TritonRepositoryError, match="invalid model config"):
            tr.parse_config(text.replace(*typo, 1))
    with pytest.raises(text_format.ParseError, match="decoupeld"):
        text_format.Parse("model_transaction_policy { decoupeld: true }", tr.model_config_message()())


@pytest.mark.integration
def test_configs_parse_with_tritonclient_grpc_model_config_pb2(repo: Path):
    # The import the Triton docs show, in a fresh process: tritonclient.grpc must not share one with kserve.
    script = (
        "import sys, pathlib\n"
        "from google.protobuf import text_format\n"
        "from tritonclient.grpc import model_config_pb2\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*/config.pbtxt')):\n"
        "    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())\n"
        "    print(config.name, config.max_batch_size, config.model_transaction_policy.decoupled)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(repo)], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:-1] == [
        "codec_decoder 0 False",
        "decoder 0 False",
        "decoder_with_past 0 False",
        "musicgen 0 True",
        "text_encoder 16 False",
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("stem", "model"),
    [
        ("text_encoder", "text_encoder"),
        ("decoder_model", "decoder"),
        ("decoder_with_past_model", "decoder_with_past"),
        ("encodec_decode", "codec_decoder"),
    ],
)
def test_onnx_configs_declare_the_graphs_own_inputs_and_outputs(repo: Path, export_dir: Path, stem: str, model: str):
    graph = onnx.load(str(export_dir / f"{stem}.onnx"), load_external_data=False).graph
    config = read_config(repo / model / "config.pbtxt")
    batched = config.max_batch_size > 0
    assert config.backend == "onnxruntime"
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual, strict=True):
            data_type = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
            assert data_type.enum_type.values_by_number[tensor.data_type].name == _triton_type(
                value.type.tensor_type.elem_type
            )
            assert list(tensor.dims) == _expected_dims(value, batched), tensor.name
    assert [(g.kind, g.count) for g in config.instance_group] == [(config.instance_group[0].KIND_CPU, 1)]
    assert config.parameters["intra_op_thread_count"].string_value == "0"


@pytest.mark.unit
def test_batching_only_where_the_first_axis_is_the_batch(repo: Path):
    encoder = read_config(repo / "text_encoder" / "config.pbtxt")
    assert encoder.max_batch_size == 16 and encoder.HasField("dynamic_batching")
    assert encoder.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [list(t.dims) for t in encoder.input] == [[-1], [-1]]  # [batch, seq] minus the batch
    assert list(encoder.output[0].dims) == [-1, HIDDEN]
    for name in ("decoder", "decoder_with_past", "codec_decoder"):
        config = read_config(repo / name / "config.pbtxt")
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching"), name
    past = read_config(repo / "decoder_with_past" / "config.pbtxt")
    assert list(past.input[0].dims) == [-1, 1]
    assert len(past.input) == 2 + 4 * LAYERS and len(past.output) == 1 + 2 * LAYERS
    assert past.parameters["enable_mem_pattern"].string_value == "0"
    codec = read_config(repo / "codec_decoder" / "config.pbtxt")
    assert list(codec.input[0].dims) == [1, -1, CODEBOOKS, -1] and list(codec.output[0].dims) == [-1, 1, -1]


@pytest.mark.unit
def test_a_batch_size_asked_of_a_graph_that_cannot_batch_is_refused_with_a_warning(
    export_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = TritonSettings(codec_decoder_max_batch_size=8, instance_kind="gpu", instance_count=2)
    with caplog.at_level(logging.WARNING):
        repo = write_repository(export_dir, tmp_path / "gpu", settings)
    assert "codec_decoder: batching turned off (audio_codes's first axis is fixed at 1" in caplog.text
    text = (repo / "codec_decoder" / "config.pbtxt").read_text()
    assert "No batching although the settings ask for 8" in text
    codec = tr.parse_config(text)
    assert codec.max_batch_size == 0
    assert [(g.kind, g.count) for g in codec.instance_group] == [(codec.instance_group[0].KIND_GPU, 2)]
    assert codec.parameters["cudnn_conv_algo_search"].string_value == "1"


@pytest.mark.unit
def test_batching_problem_names_the_axis_that_is_not_the_batch():
    def graph(*dims):
        specs = tuple(tr.TensorSpec(f"t{i}", "TYPE_FP32", d) for i, d in enumerate(dims))
        return tr.GraphSpec(Path("g.onnx"), specs[:1], specs[1:], ())

    assert tr.batching_problem(graph(("batch", "seq"), ("batch", "seq", 8))) is None
    assert tr.batching_problem(graph((None, "seq"), (None, 8))) is None  # unnamed dynamic axes
    assert "fixed at 1" in tr.batching_problem(graph((1, "batch"), ("batch", 1)))
    assert "different dimensions (batch, chunks)" in tr.batching_problem(graph(("chunks", "b"), ("batch", 1)))
    assert "scalar" in tr.batching_problem(graph(("batch",), ()))


@pytest.mark.unit
def test_a_per_request_scalar_of_a_batched_graph_is_reshaped():
    graph = tr.GraphSpec(
        Path("g.onnx"),
        (tr.TensorSpec("scale", "TYPE_FP32", ("batch",)), tr.TensorSpec("x", "TYPE_FP16", ("batch", 3))),
        (tr.TensorSpec("y", "TYPE_BF16", ("batch", None, 3)),),
        (),
    )
    config = tr.parse_config(tr.onnx_model_config("g", "g", graph, TritonSettings(), 4, "a note"))
    assert [(list(t.dims), list(t.reshape.shape), t.HasField("reshape")) for t in config.input] == [
        ([1], [], True),
        ([3], [], False),
    ]
    assert list(config.output[0].dims) == [-1, 3] and config.max_batch_size == 4


@pytest.mark.unit
def test_musicgen_is_a_decoupled_python_model_with_the_v2_names(repo: Path):
    config = read_config(repo / "musicgen" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 0
    assert config.model_transaction_policy.decoupled
    types_ = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type
    inputs = [(t.name, types_.values_by_number[t.data_type].name, list(t.dims), t.optional) for t in config.input]
    assert inputs == [
        ("PROMPT", "TYPE_STRING", [1], False),
        ("DURATION", "TYPE_FP32", [1], True),
        ("GUIDANCE_SCALE", "TYPE_FP32", [1], True),
        ("TEMPERATURE", "TYPE_FP32", [1], True),
        ("TOP_K", "TYPE_INT32", [1], True),
        ("TOP_P", "TYPE_FP32", [1], True),
        ("SEED", "TYPE_INT64", [1], True),
    ]
    outputs = [(t.name, types_.values_by_number[t.data_type].name, list(t.dims)) for t in config.output]
    assert outputs == [("AUDIO", "TYPE_FP32", [-1]), ("SAMPLE_RATE", "TYPE_INT32", [1])]
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU
    assert config.parameters["chunk_frames"].string_value == "25"
    assert "EXECUTION_ENV_PATH" not in config.parameters


# -- layout --------------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_repository_layout_is_exactly_the_documented_one(repo: Path, export_dir: Path):
    assert _files(repo) == {
        "text_encoder/config.pbtxt",
        "text_encoder/1/model.onnx",
        "text_encoder/1/text_encoder.onnx_data",
        "decoder/config.pbtxt",
        "decoder/1/model.onnx",
        "decoder_with_past/config.pbtxt",
        "decoder_with_past/1/model.onnx",
        "codec_decoder/config.pbtxt",
        "codec_decoder/1/model.onnx",
        "musicgen/config.pbtxt",
        "musicgen/1/model.py",
        "musicgen/1/graphs.json",
        "musicgen/1/config.json",
        "musicgen/1/tokenizer.json",
        "musicgen/1/tokenizer_config.json",
        "musicgen/1/vocab.txt",
        "musicgen/1/musicops.json",
        "musicgen/1/export.json",
    }
    # Same filesystem: graphs and their data are hard links, not copies; small files are copies.
    assert os.stat(repo / "decoder/1/model.onnx").st_ino == os.stat(export_dir / "decoder_model.onnx").st_ino
    data = repo / "text_encoder/1/text_encoder.onnx_data"
    assert os.stat(data).st_ino == os.stat(export_dir / "text_encoder.onnx_data").st_ino
    assert os.stat(repo / "musicgen/1/config.json").st_ino != os.stat(export_dir / "config.json").st_ino
    # The renamed graph still finds its external data.
    session = ort.InferenceSession(str(repo / "text_encoder/1/model.onnx"), providers=["CPUExecutionProvider"])
    states = session.run(None, {"input_ids": np.array([[2, 3]]), "attention_mask": np.array([[1, 0]])})[0]
    np.testing.assert_allclose(states[0, :, :3], [[2, 4, 6], [0, 0, 0]])
    graphs = json.loads((repo / "musicgen/1/graphs.json").read_text())
    assert {stem: g["model"] for stem, g in graphs.items()} == tr.TRITON_MODEL_NAMES
    assert graphs["decoder_with_past_model"]["outputs"][:2] == ["logits", "present.0.decoder.key"]
    assert oct((repo / "musicgen").stat().st_mode & 0o777) == "0o755"


@pytest.mark.integration
def test_copies_when_links_are_off_and_a_rewrite_replaces_the_old_repository(export_dir: Path, tmp_path: Path):
    out = tmp_path / "triton"
    write_repository(export_dir, out, TritonSettings())
    (out / "stale.txt").write_text("from an older run")
    write_repository(
        export_dir,
        out,
        TritonSettings(link=False, model_name="music", python_env="$$TRITON_MODEL_DIRECTORY/env.tar.gz"),
    )
    assert not (out / "stale.txt").exists() and not (out / "musicgen").exists()
    assert os.stat(out / "decoder/1/model.onnx").st_ino != os.stat(export_dir / "decoder_model.onnx").st_ino
    config = read_config(out / "music" / "config.pbtxt")
    assert config.name == "music"
    assert config.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx", "triton"]  # no staging folder left behind


@pytest.mark.unit
@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("decoder_with_past_model.onnx", "lacks decoder_with_past_model.onnx"),
        ("text_encoder.onnx_data", "external data file text_encoder.onnx_data is missing"),
        ("config.json", "lacks config.json"),
    ],
)
def test_a_missing_file_is_a_clear_error_and_writes_nothing(
    export_dir: Path, tmp_path: Path, remove: str, message: str
):
    (export_dir / remove).unlink()
    out = tmp_path / "triton"
    with pytest.raises(TritonRepositoryError, match=message):
        write_repository(export_dir, out, TritonSettings())
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


@pytest.mark.unit
def test_the_repository_may_not_replace_its_own_source(export_dir: Path):
    with pytest.raises(TritonRepositoryError, match="would replace the ONNX folder"):
        write_repository(export_dir, export_dir, TritonSettings())
    with pytest.raises(TritonRepositoryError, match="would replace the ONNX folder"):
        write_repository(export_dir, export_dir.parent, TritonSettings())


@pytest.mark.unit
def test_settings_are_checked_by_name(tmp_path: Path):
    with pytest.raises(ParamsError, match="instance_kind must be cpu or gpu"):
        TritonSettings(instance_kind="tpu").check()
    with pytest.raises(ParamsError, match="taken by one of the ONNX models"):
        TritonSettings(model_name="decoder").check()
    params = tmp_path / "params.yaml"
    params.write_text("triton:\n  max_batch: 4\n")
    with pytest.raises(ParamsError, match=r"unknown key.*max_batch"):
        load_section(params, "triton")
    params.write_text("triton:\n  instance_kind: gpu\n")
    assert load_section(params, "triton") == TritonSettings(instance_kind="gpu")


@pytest.mark.integration
def test_cli_writes_a_repository_and_reports_bad_input_in_one_line(export_dir: Path, tmp_path: Path):
    runner = CliRunner()
    params = tmp_path / "params.yaml"
    params.write_text("triton:\n  instance_count: 2\n")
    out = tmp_path / "repo"
    result = runner.invoke(tr.app, ["--onnx", str(export_dir), "--out", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"wrote a Triton repository of 5 models (codec_decoder, decoder, decoder_with_past, musicgen, text_encoder) "
        f"to {out}"
    )
    assert read_config(out / "decoder" / "config.pbtxt").instance_group[0].count == 2

    params.write_text("triton:\n  instance_cuont: 2\n")
    result = runner.invoke(tr.app, ["--onnx", str(export_dir), "--out", str(tmp_path / "x"), "--params", str(params)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown key(s) in params section 'triton': instance_cuont"

    (export_dir / "encodec_decode.onnx").unlink()
    result = runner.invoke(tr.app, ["--onnx", str(export_dir), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "lacks encodec_decode.onnx" in result.stderr
    assert not (tmp_path / "y").exists()


# -- musicgen/1/model.py -------------------------------------------------------------------------------------------


def load_model_py(repo: Path) -> types.ModuleType:
    path = repo / "musicgen" / "1" / "model.py"
    spec = importlib.util.spec_from_file_location("musicgen_triton_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_model_py_compiles_and_imports_without_triton(repo: Path):
    py_compile.compile(str(repo / "musicgen" / "1" / "model.py"), doraise=True, cfile=str(repo.parent / "model.pyc"))
    module = load_model_py(repo)
    assert "triton_python_backend_utils" not in sys.modules
    assert module.max_duration(repo / "musicgen" / "1") == 20.0
    assert module.max_duration(repo) == 300.0  # no card: the ModelCard default
    assert module.model_parameters({"parameters": {"chunk_frames": {"string_value": "5"}}}) == {"chunk_frames": "5"}
    with pytest.raises(ImportError, match="install the musicops package"):
        module.project_module("model.no_such_module")


@pytest.mark.unit
def test_request_tensors_become_generation_params_with_defaults(repo: Path):
    from model.generation_params import GenerationParams

    module = load_model_py(repo)
    prompt, params = module.parse_request({"PROMPT": np.array([b"lofi jazz"], dtype=object)}, 20.0)
    assert prompt == "lofi jazz" and params == GenerationParams()
    request = {
        "PROMPT": np.array(["calm piano"], dtype=object),
        "DURATION": np.array([2.5], dtype=np.float32),
        "GUIDANCE_SCALE": np.array([1.0], dtype=np.float32),
        "TEMPERATURE": np.array([0.0], dtype=np.float32),
        "TOP_K": np.array([0], dtype=np.int32),
        "TOP_P": np.array([0.9], dtype=np.float32),
        "SEED": np.array([7], dtype=np.int64),
        "UNUSED": None,
    }
    prompt, params = module.parse_request(request, 20.0)
    assert prompt == "calm piano"
    top_p = float(np.float32(0.9))  # what an FP32 tensor carries
    assert params == GenerationParams(duration=2.5, guidance_scale=1.0, temperature=0.0, top_k=0, top_p=top_p, seed=7)
    assert isinstance(params.top_k, int) and isinstance(params.seed, int) and isinstance(params.top_p, float)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({}, "PROMPT is required"),
        ({"PROMPT": np.array([b"a", b"b"], dtype=object)}, r"PROMPT must hold one value, got shape \[2\]"),
        ({"PROMPT": np.array([b"\xff"], dtype=object)}, "PROMPT must be UTF-8 text"),
        ({"DURATION": np.array([float("nan")], dtype=np.float32)}, "DURATION must be a finite number"),
        ({"DURATION": np.array([21.0], dtype=np.float32)}, "beyond this model's limit of 20.0 s"),
        ({"DURATION": np.array([0.0], dtype=np.float32)}, "duration must be positive"),
        ({"GUIDANCE_SCALE": np.array([0.5], dtype=np.float32)}, "guidance scale must be between 1"),
        ({"TOP_P": np.array([1.5], dtype=np.float32)}, "top-p must be between 0"),
        ({"TOP_K": np.array([-1], dtype=np.int32)}, "top-k must be 0"),
        ({"SEED": np.array([-3], dtype=np.int64)}, "seed must be a non-negative"),
        ({"TEMPERATURE": np.array([[1.0, 2.0]], dtype=np.float32)}, "TEMPERATURE must hold one value"),
    ],
)
def test_bad_request_tensors_are_named_in_the_error(repo: Path, tensors: dict, message: str):
    module = load_model_py(repo)
    request = {"PROMPT": np.array([b"jazz"], dtype=object), **tensors}
    if not tensors:
        request = {}
    with pytest.raises(module.RequestError, match=message):
        module.parse_request(request, 20.0)


# A stand-in for Triton's triton_python_backend_utils: BLS requests run the repository's ONNX files in ONNX Runtime.


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeError:
    def __init__(self, message: str):
        self._message = message

    def message(self) -> str:
        return self._message


class FakeResponse:
    def __init__(self, output_tensors=(), error=None):
        self.tensors, self._error = list(output_tensors), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> FakeError:
        return self._error

    def output_tensors(self) -> list[FakeTensor]:
        return self.tensors


class FakeSender:
    def __init__(self):
        self.sent: list[tuple[FakeResponse | None, int]] = []

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))


class FakeRequest:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = {name: FakeTensor(name, value) for name, value in tensors.items()}
        self.sender = FakeSender()

    def get_response_sender(self) -> FakeSender:
        return self.sender


def fake_pb_utils(repo: Path, calls: list) -> types.ModuleType:
    sessions: ClassVar[dict[str, ort.InferenceSession]] = {}

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs, preferred_memory=None):
            self.model, self.outputs, self.inputs = model_name, requested_output_names, inputs
            assert preferred_memory == ("cpu", 0)

        def exec(self):
            calls.append(self.model)
            path = repo / self.model / "1" / "model.onnx"
            if self.model not in sessions:
                sessions[self.model] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {t.name(): t.as_numpy() for t in self.inputs}
            try:
                values = sessions[self.model].run(self.outputs, feeds)
            except Exception as error:
                return FakeResponse(error=FakeError(str(error)))
            return FakeResponse([FakeTensor(n, v) for n, v in zip(self.outputs, values, strict=True)])

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.InferenceResponse, module.TritonError = FakeTensor, FakeResponse, FakeError
    module.InferenceRequest = InferenceRequest
    module.PreferredMemory = lambda kind, device: (kind, device)
    module.TRITONSERVER_MEMORY_CPU = "cpu"
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return module


class FakeGenerator:
    """Talks to its runner the way the ONNX generator does: text encoder once, then the codec per chunk."""

    sample_rate = 32_000

    def __init__(self, runner):
        self.runner = runner
        self.requests = []

    def stream(self, prompts, params, chunk_frames):
        self.requests.append((prompts, params, chunk_frames))
        ids = np.array([[3, 4, 5]] * len(prompts), dtype=np.int64)
        text = self.runner.run("text_encoder", {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert text["last_hidden_state"].shape == (len(prompts), 3, HIDDEN)
        for step in range(round(params.duration)):
            codes = np.full((1, len(prompts), CODEBOOKS, chunk_frames), step, dtype=np.int64)
            yield self.runner.run("encodec_decode", {"audio_codes": codes})["audio_values"][:, 0]


@pytest.mark.integration
def test_musicgen_streams_chunks_over_bls_and_ends_each_request(repo: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(repo, calls))
    module = load_model_py(repo)
    monkeypatch.setattr(module, "load_generator", lambda model_dir, runner: FakeGenerator(runner))
    model = module.TritonPythonModel()
    config = json.dumps({"parameters": {"chunk_frames": {"string_value": "2"}}})
    model.initialize({"model_repository": str(repo / "musicgen"), "model_version": "1", "model_config": config})

    good = FakeRequest({"PROMPT": np.array([b"jazz"], dtype=object), "DURATION": np.array([3.0], dtype=np.float32)})
    bad = FakeRequest({"PROMPT": np.array([b"jazz"], dtype=object), "TOP_P": np.array([7.0], dtype=np.float32)})
    assert model.execute([good, bad]) is None

    *chunks, (last, flags) = good.sender.sent
    assert last is None and flags == 1 and len(chunks) == 3
    for step, (response, flags) in enumerate(chunks):
        audio, rate = (t.as_numpy() for t in response.output_tensors())
        assert flags == 0 and [t.name() for t in response.output_tensors()] == ["AUDIO", "SAMPLE_RATE"]
        assert audio.dtype == np.float32 and audio.shape == (2 * HOP,)  # mono: the batch axis dropped
        np.testing.assert_array_equal(audio, step * CODEBOOKS)
        assert rate.tolist() == [32_000] and rate.dtype == np.int32
    assert calls == ["text_encoder", "codec_decoder", "codec_decoder", "codec_decoder"]
    prompts, params, chunk_frames = model.generator.requests[0]
    assert prompts == ["jazz"] and params.duration == 3.0 and params.top_k == 250 and chunk_frames == 2

    [(response, flags)] = bad.sender.sent
    assert flags == 1 and response.has_error() and "top-p must be between 0" in response.error().message()


@pytest.mark.integration
def test_a_failing_bls_call_ends_the_request_with_the_models_error(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(repo, []))
    module = load_model_py(repo)

    class WrongInputs(FakeGenerator):
        def stream(self, prompts, params, chunk_frames):
            yield self.runner.run("encodec_decode", {"audio_codes": np.zeros((1, 1, 4, 2), dtype=np.int32)})

    monkeypatch.setattr(module, "load_generator", lambda model_dir, runner: WrongInputs(runner))
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(repo / "musicgen"), "model_version": "1", "model_config": "{}"})
    request = FakeRequest({"PROMPT": np.array([b"jazz"], dtype=object)})
    model.execute([request])
    [(response, flags)] = request.sender.sent
    assert flags == 1 and response.error().message().startswith("RuntimeError: codec_decoder: ")
    with pytest.raises(KeyError, match="no model serves graph 'decoder'"):
        model.generator.runner.run("decoder", {})


@pytest.mark.integration
@pytest.mark.parametrize("export", ["micro_export", "micro_grid_export"])
def test_musicgen_over_bls_streams_what_the_onnx_generator_generates(export, tmp_path, monkeypatch, request):
    """The real export, repository and ONNX generator; only Triton's BLS transport is the stand-in. With a
    beat grid, the decoders' configs declare its input and the generator feeds it."""
    from model import GenerationParams, OnnxMusicGenerator

    micro_export = request.getfixturevalue(export)
    repo = write_repository(micro_export.out_dir, tmp_path / "triton", TritonSettings(link=False))
    gridded = export == "micro_grid_export"
    for name in ("decoder", "decoder_with_past"):
        assert ('name: "beat_grid"' in (repo / name / "config.pbtxt").read_text()) == gridded
    assert (repo / "musicgen" / "1" / "beat_grid.json").is_file() == gridded
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(repo, calls))
    model = load_model_py(repo).TritonPythonModel()
    config = json.dumps({"parameters": {"chunk_frames": {"string_value": "10"}}})
    model.initialize({"model_repository": str(repo / "musicgen"), "model_version": "1", "model_config": config})
    request = FakeRequest(
        {
            "PROMPT": np.array([b"calm piano at 90 BPM"], dtype=object),
            "DURATION": np.array([1.0], dtype=np.float32),
            "TEMPERATURE": np.array([0.0], dtype=np.float32),
        }
    )
    model.execute([request])
    *chunks, (_, flags) = request.sender.sent
    assert flags == 1 and len(chunks) > 1
    streamed = np.concatenate([response.output_tensors()[0].as_numpy() for response, _ in chunks])
    local = OnnxMusicGenerator.load(micro_export.out_dir, threads=1)
    whole = local.generate(["calm piano at 90 BPM"], GenerationParams(duration=1.0, temperature=0.0)).audio[0]
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-3 * max(1e-6, float(np.abs(whole).max())))
    assert set(calls) == {"text_encoder", "decoder", "decoder_with_past", "codec_decoder"}


# -- TritonClientRunner --------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_client_runner_maps_graphs_to_the_repositorys_model_names():
    assert client_runner.TRITON_MODEL_NAMES == tr.TRITON_MODEL_NAMES
    with pytest.raises(ValueError, match="protocol must be one of http, grpc"):
        TritonClientRunner("localhost:8000", protocol="websocket")
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        TritonClientRunner("ftp://localhost:8000")


@pytest.mark.integration
def test_client_runner_imports_only_the_protocol_it_uses():
    script = (
        "import sys\n"
        "from serving.triton.client_runner import TritonClientRunner\n"
        "assert not any(m.startswith('tritonclient') for m in sys.modules)\n"
        "runner = TritonClientRunner('http://127.0.0.1:1')\n"
        "assert 'tritonclient.http' in sys.modules and 'tritonclient.grpc' not in sys.modules\n"
        "assert runner.url == '127.0.0.1:1' and runner.ready() is False\n"
        "runner = TritonClientRunner('127.0.0.1:1', protocol='grpc', timeout=0.5)\n"
        "assert runner.ready() is False\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


class V2Handler(BaseHTTPRequestHandler):
    """The parts of the V2 (Open Inference) REST protocol tritonclient.http uses, over ONNX Runtime sessions."""

    protocol_version = "HTTP/1.1"
    sessions: ClassVar[dict[str, ort.InferenceSession]] = {}

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts == ["v2", "health", "live"] or (len(parts) == 4 and parts[3] == "ready"):
            return self._reply(200, {})
        session = self.sessions.get(parts[-1])
        if session is None:
            return self._reply(400, {"error": f"unknown model {parts[-1]}"})
        outputs = [{"name": o.name, "datatype": "FP32", "shape": [-1]} for o in session.get_outputs()]
        self._reply(200, {"name": parts[-1], "outputs": outputs})

    def do_POST(self):
        name = self.path.strip("/").split("/")[2]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        length = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        header, blob = json.loads(body[:length]), body[length:]
        feeds = {}
        for tensor in header["inputs"]:
            size = tensor["parameters"]["binary_data_size"]
            dtype = triton_to_np_dtype(tensor["datatype"])
            feeds[tensor["name"]] = np.frombuffer(blob[:size], dtype=dtype).reshape(tensor["shape"])
            blob = blob[size:]
        try:
            values = self.sessions[name].run([o["name"] for o in header["outputs"]], feeds)
        except Exception as error:
            return self._reply(400, {"error": str(error).splitlines()[0]})
        outputs = [
            {
                "name": o["name"],
                "datatype": np_to_triton_dtype(v.dtype),
                "shape": list(v.shape),
                "data": v.ravel().tolist(),
            }
            for o, v in zip(header["outputs"], values, strict=True)
        ]
        self._reply(200, {"model_name": name, "outputs": outputs})


@pytest.mark.integration
def test_client_runner_runs_graphs_over_the_v2_http_protocol(repo: Path):
    for model in ("text_encoder", "codec_decoder"):
        path = str(repo / model / "1" / "model.onnx")
        V2Handler.sessions[model] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), V2Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with TritonClientRunner(f"http://127.0.0.1:{server.server_port}", timeout=10) as runner:
            ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
            out = runner.run("text_encoder", {"input_ids": ids, "attention_mask": np.array([[1, 1], [1, 0]])})
            assert list(out) == ["last_hidden_state"] and out["last_hidden_state"].dtype == np.float32
            np.testing.assert_allclose(out["last_hidden_state"][:, :, 0], [[1, 2], [3, 0]])
            codes = np.ones((1, 2, CODEBOOKS, 3), dtype=np.int64)
            audio = runner.run("encodec_decode", {"audio_codes": codes})["audio_values"]
            assert audio.shape == (2, 1, 3 * HOP) and np.all(audio == CODEBOOKS)
            with pytest.raises(client_runner.TritonRunnerError, match=r"codec_decoder \(graph encodec_decode\): "):
                runner.run("encodec_decode", {"audio_codes": codes.astype(np.int32)})
            with pytest.raises(client_runner.TritonRunnerError, match=r"decoder \(graph decoder_model\)"):
                runner.output_names("decoder_model")
    finally:
        server.shutdown()
        server.server_close()
