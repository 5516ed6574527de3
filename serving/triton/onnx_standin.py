"""A Triton Python-backend model that runs its version folder's `model.onnx` in ONNX Runtime.

The Triton that runs on this machine (the server inside the `nvidia-pytriton` wheel, CPU) has only the Python
backend, while the repository's four ONNX models are written for Triton's onnxruntime backend. For a real-Triton
run, `serving.triton.server.with_onnx_stand_ins` copies the repository and gives each ONNX model this file as its
model.py with `backend: "python"`: same names, inputs, outputs, batching and instance groups, and the `musicgen`
generation model (unchanged) reaches them through real BLS calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # four models and the loop share a small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor.name for tensor in self.session.get_inputs()]
        self.outputs = [tensor.name for tensor in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            feeds = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    feeds[name] = tensor.as_numpy()
            wanted = request.requested_output_names() or self.outputs
            try:
                values = self.session.run(wanted, feeds)
            except Exception as error:  # the caller (a BLS request) gets the message, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
                continue
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in zip(wanted, values, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
