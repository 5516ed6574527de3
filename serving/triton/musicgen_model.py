"""MusicGen's generation loop as a Triton Python-backend model (decoupled). A file, not a module of serving:
components/triton_repository.py copies it into a repository as musicgen/1/model.py.

A request holds PROMPT and, optionally, DURATION, GUIDANCE_SCALE, TEMPERATURE, TOP_K, TOP_P and SEED; the responses
are AUDIO chunks (float32 mono, SAMPLE_RATE beside each) sent while tokens are produced, then an empty final one.
The loop is the project's ONNX generator (model.onnx_backend); the graphs it runs are this repository's ONNX models,
reached through BLS by BlsRunner, so KV caches never leave the server. Only BlsRunner and TritonPythonModel need
Triton: the rest runs (and is tested) anywhere.

Triton puts this folder on sys.path and imports this file as `1.model`, so a bare `import model...` finds the
project's `model` package only when musicops is installed in the server's Python; otherwise it would find this file,
and project_module() says so.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

GRAPHS_FILE = "graphs.json"
CARD_FILE = "musicops.json"

# -- the one place that knows the ONNX generator's API: adapt these if model.onnx_backend's names change -----------
GENERATOR_MODULE = "model.onnx_backend"
GENERATOR_CLASS = "OnnxMusicGenerator"


def load_generator(model_dir: Path, runner: Any) -> Any:
    """The project's ONNX generator over the files in `model_dir`, running its graphs through `runner`."""
    cls = getattr(project_module(GENERATOR_MODULE), GENERATOR_CLASS)
    return cls.load(model_dir, runner=runner) if hasattr(cls, "load") else cls(model_dir, runner=runner)


def stream_audio(generator: Any, prompt: str, params: Any, chunk_frames: int) -> Iterator[np.ndarray]:
    """Mono float32 chunks of one prompt's audio, as the generator decodes them."""
    for chunk in generator.stream([prompt], params, chunk_frames=chunk_frames):
        yield np.ascontiguousarray(np.asarray(chunk, dtype=np.float32).reshape(-1))


# -- request parsing -----------------------------------------------------------------------------------------------

# Optional request tensors -> GenerationParams fields (absent: the field's default).
OPTIONAL_INPUTS = {
    "DURATION": ("duration", float),
    "GUIDANCE_SCALE": ("guidance_scale", float),
    "TEMPERATURE": ("temperature", float),
    "TOP_K": ("top_k", int),
    "TOP_P": ("top_p", float),
    "SEED": ("seed", int),
}


class RequestError(ValueError):
    """A request this model cannot serve; the message names the input."""


def project_module(name: str) -> Any:
    """A module of the musicops project, with the fix in the message when the server's Python lacks it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"cannot import {name} ({error}): install the musicops package into the Python that runs this model "
            "(or set EXECUTION_ENV_PATH to an environment holding it)"
        ) from error


def _single(array: np.ndarray, name: str) -> Any:
    array = np.asarray(array)
    if array.size != 1:
        raise RequestError(f"{name} must hold one value, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def parse_request(tensors: Mapping[str, np.ndarray | None], max_duration: float) -> tuple[str, Any]:
    """The prompt and GenerationParams of a request's tensors (name -> array, None when absent)."""
    if tensors.get("PROMPT") is None:
        raise RequestError("PROMPT is required (an empty string is unconditional)")
    prompt = _single(tensors["PROMPT"], "PROMPT")
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("PROMPT must be UTF-8 text") from None
    if not isinstance(prompt, str):
        raise RequestError(f"PROMPT must be text, got {type(prompt).__name__}")
    values: dict[str, Any] = {}
    for name, (field, kind) in OPTIONAL_INPUTS.items():
        if tensors.get(name) is None:
            continue
        value = _single(tensors[name], name)
        if kind is float and not math.isfinite(float(value)):
            raise RequestError(f"{name} must be a finite number, got {value}")
        values[field] = kind(value)
    params = project_module("model.generation_params").GenerationParams(**values)
    try:
        params.check(max_duration)
    except ValueError as error:  # model.errors.ModelInputError: the range that was broken
        raise RequestError(str(error)) from None
    return prompt, params


def max_duration(model_dir: Path) -> float:
    """The longest generation the model card allows (the card's default when it is silent)."""
    default = 300.0
    path = model_dir / CARD_FILE
    if not path.is_file():
        return default
    return float(json.loads(path.read_text()).get("max_duration_seconds", default))


def model_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


# -- inside Triton -------------------------------------------------------------------------------------------------


class BlsRunner:
    """GraphRunner over BLS: `run(graph, inputs)` executes an Optimum graph as this server's model of that graph."""

    def __init__(self, pb_utils: Any, graphs: Mapping[str, Mapping[str, Any]]):
        self.pb = pb_utils
        self.graphs = graphs
        # Outputs back in CPU memory even from GPU instances: the generator works on numpy arrays.
        memory = getattr(pb_utils, "PreferredMemory", None)
        self.memory = {} if memory is None else {"preferred_memory": memory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if graph not in self.graphs:
            raise KeyError(f"no model serves graph {graph!r}; known: {', '.join(self.graphs)}")
        spec = self.graphs[graph]
        request = self.pb.InferenceRequest(
            model_name=spec["model"],
            requested_output_names=list(spec["outputs"]),
            inputs=[self.pb.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()],
            **self.memory,
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{spec['model']}: {response.error().message()}")
        return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}


class TritonPythonModel:
    """Triton's entry points: load the generator once, stream each request's audio as separate responses."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.chunk_frames = int(model_parameters(json.loads(args["model_config"])).get("chunk_frames", "25"))
        self.max_duration = max_duration(model_dir)
        graphs = json.loads((model_dir / GRAPHS_FILE).read_text())
        self.generator = load_generator(model_dir, BlsRunner(pb_utils, graphs))
        self.sample_rate = np.array([int(self.generator.sample_rate)], dtype=np.int32)

    def execute(self, requests: list[Any]) -> None:
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._stream(request, sender)
            except Exception as error:  # a boundary: any failure ends this request with its message
                message = str(error) if isinstance(error, RequestError) else f"{type(error).__name__}: {error}"
                sender.send(self.pb.InferenceResponse(error=self.pb.TritonError(message)), flags=final)
            else:
                sender.send(flags=final)
        return None  # decoupled: every response went through the senders

    def _stream(self, request: Any, sender: Any) -> None:
        names = ("PROMPT", *OPTIONAL_INPUTS)
        tensors = {name: self.pb.get_input_tensor_by_name(request, name) for name in names}
        prompt, params = parse_request(
            {name: None if t is None else t.as_numpy() for name, t in tensors.items()}, self.max_duration
        )
        cancelled = getattr(request, "is_cancelled", lambda: False)
        for chunk in stream_audio(self.generator, prompt, params, self.chunk_frames):
            if cancelled():  # the client went away: stop generating for nobody
                return
            outputs = [self.pb.Tensor("AUDIO", chunk), self.pb.Tensor("SAMPLE_RATE", self.sample_rate)]
            sender.send(self.pb.InferenceResponse(output_tensors=outputs))

    def finalize(self) -> None:
        self.generator = None
