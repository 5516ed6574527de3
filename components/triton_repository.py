"""The ONNX export laid out as a Triton model repository: four ONNX models and the generation loop that streams.

```
<out>/
  text_encoder/1/model.onnx        text_encoder.onnx            (ONNX Runtime backend)
  decoder/1/model.onnx             decoder_model.onnx (prefill)
  decoder_with_past/1/model.onnx   decoder_with_past_model.onnx (one cached step)
  codec_decoder/1/model.onnx       encodec_decode.onnx
  musicgen/1/model.py              the generation loop (Python backend, decoupled), calling the four through BLS
  musicgen/1/graphs.json           Optimum file stem -> Triton model name and tensor names, for BlsRunner
  musicgen/1/config.json ...       what the generator loads besides graphs: model config, tokenizer, musicops.json
  <each>/config.pbtxt
```

Each ONNX model's `config.pbtxt` is generated from the graph's real inputs and outputs (names, element types,
dims with -1 for every dynamic axis), so Triton's auto-complete is never needed (it is skipped when a config names
inputs and outputs, and would otherwise turn a graph whose first axes are all dynamic into a batching model).
External data files a graph references travel with it into its version folder, under the name the graph records.

Batching. `max_batch_size > 0` tells Triton that axis 0 of every input and output is the request batch, which it may
concatenate across requests (`dynamic_batching`, waiting up to `max_queue_delay_microseconds` for company); dims then
leave that axis out. That is sound only where axis 0 really is the batch:
- the decoder graphs never batch (`max_batch_size: 0`): their axis 0 mixes prompts with codebooks and the guidance
  rows, and a request's KV cache belongs to one generation, so two requests' steps cannot be merged or split apart;
- the text encoder batches (`[batch, seq]` in, `[batch, seq, hidden]` out), though only requests with the same
  token count can share a batch;
- the codec decoder's `audio_codes` is `[1, batch, codebooks, frames]` (EnCodec's chunk axis first) while its output
  is `[batch, 1, samples]`, so concatenating on axis 0 would read two requests as two chunks of one: batching stays
  off unless a graph with the batch first is exported. A requested batch size on a graph that cannot batch is turned
  into 0 with a warning (and a comment in its config), since not batching costs speed, never correctness.
`max_batch_size` also caps what one request may send on axis 0 (guidance doubles the prompts).

ONNX Runtime options. All graph optimisations are ONNX Runtime's default and stay on. `intra_op_thread_count` is
set from the settings (0: ONNX Runtime's one thread per core; lower it when several instances share the cores). The
decoder graphs get `enable_mem_pattern: 0`: the past grows by one frame every step, so no two calls share a shape and
ONNX Runtime would plan (and keep) a memory pattern per step that is never reused. On GPU `cudnn_conv_algo_search`
is 1 (heuristic): the default exhaustive search reruns for every new input shape, and the codec sees a new frame count
with every streamed chunk. It is given in the model `parameters`, the form the backend reads in every release (the
newer `gpu_execution_accelerator` form is overwritten by it where both exist).

Why the generation loop is a decoupled Python-backend model calling the graphs through BLS: one second of audio is 50
decoder steps, and every step's input is the previous step's KV cache (megabytes for a real model). Run by a client,
each step would ship the caches over the network and back; inside the server, a BLS call passes them through shared
memory, so a client sends one prompt and receives audio. Decoupled mode (`model_transaction_policy { decoupled: true }`)
lets one request return many responses, so audio chunks leave while tokens are still being produced (Triton streams
them on gRPC's bidirectional stream and HTTP's `generate_stream`). The loop itself is the project's ONNX generator,
handed a `BlsRunner`, so there is one generation loop whether the graphs run in-process, in Triton or remotely.
`musicgen` instances (`generator_instances`) bound the concurrent streams: the Python backend runs one `execute` at
a time per instance.

When `serving.triton.client_runner.TritonClientRunner` is the better choice: when the caller must own the loop (the
project's predictor with its batching of prompts, beam search, audio continuation, per-step monitoring), when the
graphs run on a shared GPU pool far from CPU-only predictors, or for short clips where a handful of round trips is
cheap. It ships every step's caches over the network, so for long streamed generations call `musicgen` instead.

The musicgen model runs inside Triton's Python, which must be able to import the project's `model` package (install
musicops into the server image, or point `python_env` at a conda-pack archive holding it). Large caches cross the
Python backend's shared memory: raise `--backend-config=python,shm-default-byte-size=...` for big models.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import onnx
import typer

from model.atomic_io import atomic_directory
from model.errors import first_line
from model.onnx_backend import TRITON_MODEL_NAMES
from settings import paths
from settings.params import ParamsError, TritonSettings, load_section

log = logging.getLogger(__name__)

# Graphs whose axis 0 mixes prompts, codebooks and guidance rows and whose KV caches belong to one request.
UNBATCHABLE = {"decoder_model", "decoder_with_past_model"}
# The generator's own files copied beside musicgen's model.py: configs, tokenizer, model card (never graphs or weights).
GENERATOR_FILE_SUFFIXES = {".json", ".txt", ".model"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
GRAPHS_FILE = "graphs.json"
# The generation loop's Triton model file, copied into musicgen/1/ as model.py. Located as a file, not imported
# (components/ never imports serving/): it lives with the rest of the Triton runtime in serving/triton/, which the
# installed package ships beside components/ (site-packages/serving/triton/), so this path holds there too.
MUSICGEN_MODEL_PY = Path(__file__).resolve().parents[1] / "serving" / "triton" / "musicgen_model.py"

ONNX_TO_TRITON = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


class TritonRepositoryError(ValueError):
    """The ONNX folder cannot become a repository (a graph missing or unusable); the message names the problem."""


# -- the graphs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, Triton data type and dims (a str or None marks a dynamic axis)."""

    name: str
    data_type: str
    dims: tuple[int | str | None, ...]

    def triton_dims(self, batched: bool) -> list[int]:
        dims = [d if isinstance(d, int) else -1 for d in self.dims]
        return dims[1:] if batched else dims


@dataclass(frozen=True)
class GraphSpec:
    """What a graph file declares: inputs (initialisers excluded), outputs, and the external data files it reads."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: tuple[str, ...]


def _tensor_spec(value: onnx.ValueInfoProto, path: Path) -> TensorSpec:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type not in ONNX_TO_TRITON:
        raise TritonRepositoryError(f"{path.name}: {value.name!r} is not a tensor of a type Triton serves")
    if not tensor.HasField("shape"):
        raise TritonRepositoryError(f"{path.name}: {value.name!r} has no declared rank; Triton needs one")
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
        for d in tensor.shape.dim
    )
    return TensorSpec(value.name, ONNX_TO_TRITON[tensor.elem_type], dims)


def _all_tensors(graph: onnx.GraphProto):
    # Weights live in initialisers and in Constant nodes' attributes, in subgraphs (If, Loop) too.
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def read_graph(path: Path) -> GraphSpec:
    """A graph's interface, read without loading its weights."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # a boundary: any unreadable file is a bad graph
        raise TritonRepositoryError(f"cannot read {path}: {first_line(error)}") from None
    initialisers = {t.name for t in proto.graph.initializer}
    inputs = tuple(_tensor_spec(v, path) for v in proto.graph.input if v.name not in initialisers)
    outputs = tuple(_tensor_spec(v, path) for v in proto.graph.output)
    locations = set()
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if not location or Path(location).is_absolute() or ".." in Path(location).parts:
                raise TritonRepositoryError(
                    f"{path.name}: external data location {location!r} is not inside its folder"
                )
            if not (path.parent / location).is_file():
                raise TritonRepositoryError(f"{path.name}: its external data file {location} is missing")
            locations.add(location)
    return GraphSpec(path, inputs, outputs, tuple(sorted(locations)))


def batching_problem(graph: GraphSpec) -> str | None:
    """Why Triton may not batch this graph along axis 0, or None when every input and output has the batch first."""
    named = set()
    for spec in (*graph.inputs, *graph.outputs):
        if not spec.dims:
            return f"{spec.name} is a scalar"
        first = spec.dims[0]
        if isinstance(first, int):
            return f"{spec.name}'s first axis is fixed at {first}, not the batch"
        if first:
            named.add(first)
    if len(named) > 1:
        return f"the first axes are different dimensions ({', '.join(sorted(named))})"
    return None


# -- config.pbtxt --------------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    if not text.isprintable():
        raise TritonRepositoryError(f"name {text!r} cannot be written into a config")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensors(key: str, entries: list[tuple[str, str, list[int], bool]]) -> list[str]:
    """An `input [...]` or `output [...]` block of (name, data type, dims, optional) entries."""
    lines = [f"{key} ["]
    for index, (name, data_type, dims, optional) in enumerate(entries):
        lines += ["  {", f"    name: {_quote(name)}", f"    data_type: {data_type}"]
        if dims:
            lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
        else:  # a per-request scalar in a batched model: Triton wants one dim and a reshape to none
            lines += ["    dims: [ 1 ]", "    reshape { shape: [ ] }"]
        if optional:
            lines.append("    optional: true")
        lines.append("  }," if index < len(entries) - 1 else "  }")
    return [*lines, "]"]


def _graph_tensors(key: str, specs: tuple[TensorSpec, ...], batched: bool) -> list[str]:
    return _tensors(key, [(spec.name, spec.data_type, spec.triton_dims(batched), False) for spec in specs])


def _parameter(key: str, value: str) -> str:
    return f"parameters {{ key: {_quote(key)} value {{ string_value: {_quote(value)} }} }}"


def onnx_model_config(
    name: str, stem: str, graph: GraphSpec, settings: TritonSettings, max_batch_size: int, batching_note: str
) -> str:
    """The config.pbtxt of one ONNX model (batching already decided: `max_batch_size`, explained by the note)."""
    batched = max_batch_size > 0
    kind = "KIND_GPU" if settings.instance_kind == "gpu" else "KIND_CPU"
    lines = [
        f"# {name}: {stem}.onnx, served by ONNX Runtime. Written by components/triton_repository.py: edit the",
        "# triton section of params.yaml, not this file. Inputs and outputs are the graph's own (dims -1: dynamic),",
        "# so Triton's auto-complete is skipped.",
        f"name: {_quote(name)}",
        'backend: "onnxruntime"',
        f"# {batching_note}",
        f"max_batch_size: {max_batch_size}",
    ]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {settings.max_queue_delay_microseconds}", "}"]
    lines += _graph_tensors("input", graph.inputs, batched)
    lines += _graph_tensors("output", graph.outputs, batched)
    lines += ["instance_group [", "  {", f"    kind: {kind}", f"    count: {settings.instance_count}", "  }", "]"]
    lines += [
        "# 0: ONNX Runtime's default, one thread per core.",
        _parameter("intra_op_thread_count", str(settings.intra_op_threads)),
    ]
    if stem in UNBATCHABLE:
        lines += [
            "# The past grows every step, so no shape repeats: a memory pattern per shape would never be reused.",
            _parameter("enable_mem_pattern", "0"),
        ]
    if settings.instance_kind == "gpu":
        lines += [
            "# Heuristic cuDNN algorithm choice: an exhaustive search reruns for every new shape (every chunk).",
            _parameter("cudnn_conv_algo_search", "1"),
        ]
    return "\n".join(lines) + "\n"


# The streaming model's request and response tensors: (name, data type, dims, optional).
MUSICGEN_INPUTS = (
    ("PROMPT", "TYPE_STRING", [1], False),
    ("DURATION", "TYPE_FP32", [1], True),
    ("GUIDANCE_SCALE", "TYPE_FP32", [1], True),
    ("TEMPERATURE", "TYPE_FP32", [1], True),
    ("TOP_K", "TYPE_INT32", [1], True),
    ("TOP_P", "TYPE_FP32", [1], True),
    ("SEED", "TYPE_INT64", [1], True),
)
MUSICGEN_OUTPUTS = (("AUDIO", "TYPE_FP32", [-1]), ("SAMPLE_RATE", "TYPE_INT32", [1]))


def musicgen_model_config(settings: TritonSettings) -> str:
    """The config.pbtxt of the generation loop: Python backend, decoupled, one prompt per request."""
    lines = [
        f"# {settings.model_name}: the MusicGen generation loop (1/model.py, Python backend), calling the ONNX models",
        "# through BLS. Written by components/triton_repository.py. Decoupled: one request, many responses",
        "# (audio chunks as they are decoded, then an empty final one). Inputs but PROMPT are optional and default",
        "# to MusicGen's settings (model.generation_params.GenerationParams).",
        f"name: {_quote(settings.model_name)}",
        'backend: "python"',
        "# One prompt a request: a stream cannot be merged with another's.",
        "max_batch_size: 0",
        "model_transaction_policy {",
        "  decoupled: true",
        "}",
    ]
    lines += _tensors("input", list(MUSICGEN_INPUTS))
    lines += _tensors("output", [(*output, False) for output in MUSICGEN_OUTPUTS])
    lines += [
        "# The loop only orchestrates (the ONNX models run where their own instance groups say); the Python backend",
        "# runs one execute at a time per instance, so the count is the number of concurrent streams.",
        "instance_group [",
        "  {",
        "    kind: KIND_CPU",
        f"    count: {settings.generator_instances}",
        "  }",
        "]",
        _parameter("chunk_frames", str(settings.chunk_frames)),
    ]
    if settings.python_env:
        lines.append(_parameter("EXECUTION_ENV_PATH", settings.python_env))
    return "\n".join(lines) + "\n"


def model_config_message() -> type:
    """tritonclient's `inference.ModelConfig` protobuf class: what Triton itself parses config.pbtxt into.

    Loaded from tritonclient/grpc/model_config_pb2.py alone: importing the `tritonclient.grpc` package would also
    register its service protos, which clash with kserve's in one process (DESIGN.md). An already imported
    `tritonclient.grpc` is reused (the same class either way).
    """
    name = "tritonclient.grpc.model_config_pb2"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.find_spec("tritonclient")
        if spec is None or not spec.submodule_search_locations:
            raise TritonRepositoryError("tritonclient is not installed: it holds Triton's ModelConfig definition")
        path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.ModelConfig


def parse_config(text: str) -> Any:
    """config.pbtxt text as Triton's ModelConfig message; TritonRepositoryError names an unknown field or bad value."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, model_config_message()())
    except text_format.ParseError as error:
        raise TritonRepositoryError(f"invalid model config: {error}") from None


# -- the repository ------------------------------------------------------------------------------------------------


def _place(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:  # another filesystem, or links not allowed: copy
            pass
    shutil.copy2(source, target)


def _check_source(onnx_dir: Path, out_dir: Path) -> dict[str, GraphSpec]:
    if not onnx_dir.is_dir():
        raise TritonRepositoryError(f"ONNX folder {onnx_dir} does not exist")
    onnx_real, out_real = onnx_dir.resolve(), out_dir.resolve()
    if onnx_real == out_real or out_real in onnx_real.parents:
        raise TritonRepositoryError(f"the repository {out_dir} would replace the ONNX folder {onnx_dir}")
    missing = [f"{stem}.onnx" for stem in TRITON_MODEL_NAMES if not (onnx_dir / f"{stem}.onnx").is_file()]
    if missing:
        raise TritonRepositoryError(f"{onnx_dir} lacks {', '.join(missing)} (Optimum's MusicGen file names)")
    if not (onnx_dir / "config.json").is_file():
        raise TritonRepositoryError(f"{onnx_dir} lacks config.json, which the generator loads")
    if not any((onnx_dir / name).is_file() for name in TOKENIZER_FILES):
        raise TritonRepositoryError(f"{onnx_dir} holds no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return {stem: read_graph(onnx_dir / f"{stem}.onnx") for stem in TRITON_MODEL_NAMES}


def _max_batch_size(stem: str, graph: GraphSpec, settings: TritonSettings) -> tuple[int, str]:
    if stem in UNBATCHABLE:
        return 0, "Axis 0 mixes prompts, codebooks and guidance rows; a KV cache belongs to one request: no batching."
    wanted = settings.text_encoder_max_batch_size if stem == "text_encoder" else settings.codec_decoder_max_batch_size
    if wanted == 0:
        return 0, "Batching is off in the settings."
    problem = batching_problem(graph)
    if problem:
        log.warning("%s: batching turned off (%s)", TRITON_MODEL_NAMES[stem], problem)
        return 0, f"No batching although the settings ask for {wanted}: {problem}."
    return wanted, "Axis 0 of every input and output is the batch: Triton merges requests along it."


def write_repository(onnx_dir: Path, out_dir: Path, settings: TritonSettings) -> Path:
    """Lay out the Triton model repository for an ONNX export in `out_dir` (all of it, or nothing on error)."""
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    settings.check()
    graphs = _check_source(onnx_dir, out_dir)
    configs = {}
    for stem, graph in graphs.items():
        name = TRITON_MODEL_NAMES[stem]
        configs[name] = onnx_model_config(name, stem, graph, settings, *_max_batch_size(stem, graph, settings))
    configs[settings.model_name] = musicgen_model_config(settings)
    for text in configs.values():  # a typo in a generator above fails here, not at server start
        parse_config(text)
    bls_graphs = {
        stem: {
            "model": TRITON_MODEL_NAMES[stem],
            "inputs": [spec.name for spec in graph.inputs],
            "outputs": [spec.name for spec in graph.outputs],
        }
        for stem, graph in graphs.items()
    }
    external = {location for graph in graphs.values() for location in graph.external_data}
    with atomic_directory(out_dir) as staging:
        for stem, graph in graphs.items():
            version = staging / TRITON_MODEL_NAMES[stem] / "1"
            _place(graph.path, version / "model.onnx", settings.link)
            for location in graph.external_data:
                _place(onnx_dir / location, version / location, settings.link)
        generator_dir = staging / settings.model_name / "1"
        generator_dir.mkdir(parents=True)
        for path in sorted(onnx_dir.iterdir()):
            if path.is_file() and path.suffix in GENERATOR_FILE_SUFFIXES and path.name not in external:
                shutil.copy2(path, generator_dir / path.name)  # small files: copies, so edits never leak back
        (generator_dir / GRAPHS_FILE).write_text(json.dumps(bls_graphs, indent=2) + "\n")
        shutil.copy2(MUSICGEN_MODEL_PY, generator_dir / "model.py")
        for name, text in configs.items():
            (staging / name / "config.pbtxt").write_text(text)
    return out_dir


# -- CLI -----------------------------------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    onnx_dir: Annotated[
        Path, typer.Option("--onnx", help="The ONNX export (Optimum's MusicGen file names).")
    ] = paths.ONNX,
    out: Annotated[Path, typer.Option(help="The Triton model repository to write (replaced whole).")] = paths.TRITON,
    params: Annotated[Path | None, typer.Option(help="params.yaml: reads its triton section.")] = None,
) -> None:
    """Write a Triton model repository (four ONNX models and the streaming musicgen model) for an ONNX export."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        settings = load_section(params, "triton") if params else TritonSettings()
        write_repository(onnx_dir, out, settings)
    except (ParamsError, TritonRepositoryError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    models = sorted(path.name for path in out.iterdir() if path.is_dir())
    typer.echo(f"wrote a Triton repository of {len(models)} models ({', '.join(models)}) to {out}")


if __name__ == "__main__":
    app()
