"""A GraphRunner whose graphs run in a remote Triton: the project's generation loop here, its ONNX models there.

`TritonClientRunner(url, protocol).run(graph, inputs)` sends one Optimum graph's inputs (`text_encoder`,
`decoder_model`, `decoder_with_past_model`, `encodec_decode`) to the Triton model that serves it in a repository
written by `components.triton_repository`, and returns its outputs by name: the signature of the ONNX generator's
GraphRunner, so the predictor runs the same loop against Triton as against in-process ONNX Runtime.

Every decoder step crosses the network with its KV cache both ways. That suits a predictor that must own the loop
(batched prompts, beams, audio continuation, per-step monitoring) or graphs on a GPU pool far from CPU-only
predictors; for long streamed generations call the repository's `musicgen` model instead, which runs the same loop
inside the server (see components/triton_repository.py).

The protocol module is imported when a runner is made, not with this module: `tritonclient.grpc` and `kserve`
cannot share a process (their protobuf descriptors clash), so a KServe predictor uses `protocol="http"`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from model.onnx_backend import TRITON_MODEL_NAMES

PROTOCOLS = ("http", "grpc")


class TritonRunnerError(RuntimeError):
    """Triton refused or failed a graph call; the message names the model."""


class TritonClientRunner:
    """Run Optimum-named graphs on a Triton server over HTTP or gRPC (tritonclient)."""

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        model_names: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ):
        """`url` is host:port (a scheme is accepted: https:// turns on TLS); `model_names` maps graph stems to
        Triton models (default: the repository's names); `timeout` is in seconds per call."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.model_names = dict(TRITON_MODEL_NAMES if model_names is None else model_names)
        self.timeout = timeout
        scheme, _, address = url.rpartition("://")
        if scheme not in ("", "http", "https", "grpc", "grpcs"):
            raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}")
        self.url = address.rstrip("/")
        ssl = scheme in ("https", "grpcs")
        self._client_module = importlib.import_module(f"tritonclient.{protocol}")
        self._utils = importlib.import_module("tritonclient.utils")
        if protocol == "http":
            options: dict[str, Any] = {"ssl": ssl}
            if timeout is not None:
                options.update(connection_timeout=timeout, network_timeout=timeout)
        else:
            options = {"ssl": ssl}
        self.client = self._client_module.InferenceServerClient(url=self.url, **options)
        self._outputs: dict[str, list[str]] = {}

    def model_name(self, graph: str) -> str:
        if graph not in self.model_names:
            raise KeyError(f"no Triton model serves graph {graph!r}; known: {', '.join(self.model_names)}")
        return self.model_names[graph]

    def output_names(self, graph: str) -> list[str]:
        """The model's outputs, from its metadata (asked once per model)."""
        if graph not in self._outputs:
            name = self.model_name(graph)
            try:
                if self.protocol == "grpc":
                    metadata = self.client.get_model_metadata(name, as_json=True)
                else:
                    metadata = self.client.get_model_metadata(name)
            except self._utils.InferenceServerException as error:
                raise TritonRunnerError(f"{name} (graph {graph}): {error.message()}") from None
            self._outputs[graph] = [output["name"] for output in metadata["outputs"]]
        return self._outputs[graph]

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of `graph` on `inputs` (names as the ONNX file has them), computed by Triton."""
        name = self.model_name(graph)
        tensors = []
        for input_name, value in inputs.items():
            value = np.ascontiguousarray(value)
            tensor = self._client_module.InferInput(
                input_name, list(value.shape), self._utils.np_to_triton_dtype(value.dtype)
            )
            tensor.set_data_from_numpy(value)  # binary on the wire over HTTP too
            tensors.append(tensor)
        outputs = [self._client_module.InferRequestedOutput(output) for output in self.output_names(graph)]
        extra = {"client_timeout": self.timeout} if self.protocol == "grpc" and self.timeout is not None else {}
        try:
            result = self.client.infer(name, inputs=tensors, outputs=outputs, **extra)
        except self._utils.InferenceServerException as error:
            raise TritonRunnerError(f"{name} (graph {graph}): {error.message()}") from None
        return {output: result.as_numpy(output) for output in self.output_names(graph)}

    def ready(self) -> bool:
        """Whether the server is live and every graph's model is ready to serve."""
        extra = {"client_timeout": self.timeout} if self.protocol == "grpc" and self.timeout is not None else {}
        try:
            return bool(self.client.is_server_live(**extra)) and all(
                self.client.is_model_ready(model, **extra) for model in self.model_names.values()
            )
        except Exception:  # a boundary: an unreachable server is simply not ready
            return False

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonClientRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
