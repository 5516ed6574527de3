"""The predictor's two protocols, parsed and checked: V1 JSON instances and V2 (Open Inference Protocol) tensors.

V1 (REST): `POST /v1/models/musicgen:predict` with `{"instances": [{"prompt": "calm piano", "duration": 4,
"guidance": 3, "seed": 7, "temperature"?, "top_k"?, "top_p"?}]}`.

V2 (REST and gRPC; tritonclient works against both): inputs PROMPT (BYTES [batch]), DURATION, GUIDANCE_SCALE,
TEMPERATURE, TOP_P (FP32), TOP_K (INT32), SEED (INT64; negative: random), each [batch] or [1] and all but PROMPT
optional (MusicGen's defaults); outputs AUDIO (FP32 [batch, samples], rows of shorter clips padded with zeros),
SAMPLE_RATE (INT32 [1]) and SEED (INT64 [batch], the seed of each row).

Every function here turns a request into (prompt, GenerationParams) pairs or raises kserve's InvalidInput naming
the field at fault, which KServe answers with 400 (gRPC INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest

from model.errors import first_line
from model.generation_params import GenerationParams

# V2 inputs: datatype, and the GenerationParams field each fills (PROMPT fills the prompt).
V2_INPUTS = {
    "PROMPT": ("BYTES", None),
    "DURATION": ("FP32", "duration"),
    "GUIDANCE_SCALE": ("FP32", "guidance_scale"),
    "TEMPERATURE": ("FP32", "temperature"),
    "TOP_K": ("INT32", "top_k"),
    "TOP_P": ("FP32", "top_p"),
    "SEED": ("INT64", "seed"),
}
V2_OUTPUTS = {"AUDIO": ("FP32", [-1, -1]), "SAMPLE_RATE": ("INT32", [1]), "SEED": ("INT64", [-1])}
# V1 instance fields and the GenerationParams field each fills ("guidance" is the short name clients use).
V1_FIELDS = {
    "duration": "duration",
    "guidance": "guidance_scale",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "seed": "seed",
}
PARAM_TYPES = {f.name: int if f.name in ("top_k", "seed") else float for f in fields(GenerationParams)}


def param_value(name: str, value: Any, where: str) -> int | float | None:
    """A V1 JSON value as the GenerationParams field `name` takes it; a negative seed means a random one."""
    kind = PARAM_TYPES[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, float) and not math.isfinite(value):  # NaN slips past every range check: refuse it by name
        raise InvalidInput(f"{where} must be a finite number, got {value!r}")
    if not number or (kind is int and not float(value).is_integer()):
        expected = "an integer" if kind is int else "a number"
        raise InvalidInput(f"{where} must be {expected}, got {value!r}")
    value = kind(value)
    return None if name == "seed" and value < 0 else value


def v1_request(instance: Any, index: int) -> tuple[str, GenerationParams]:
    """The prompt and parameters of one V1 instance; InvalidInput names the field at fault."""
    where = f"instance {index}"
    if not isinstance(instance, dict):
        raise InvalidInput(f"{where} must be an object with a prompt, got {type(instance).__name__}")
    unknown = sorted(set(instance) - set(V1_FIELDS) - {"prompt"})
    if unknown:
        known = ", ".join(["prompt", *V1_FIELDS])
        raise InvalidInput(f"{where}: unknown field {', '.join(unknown)} (known: {known})")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidInput(f"{where}: prompt is required (a string), got {prompt!r}")
    values = {
        name: param_value(name, instance[key], f"{where}: {key}")
        for key, name in V1_FIELDS.items()
        if instance.get(key) is not None
    }
    return prompt, GenerationParams(**values)


def v2_values(tensor: InferInput) -> np.ndarray:
    """One V2 input's values, flat, once its datatype is the declared one (read otherwise, bytes would lie)."""
    datatype = V2_INPUTS[tensor.name][0]
    if tensor.datatype != datatype:
        raise InvalidInput(f"input {tensor.name} must be {datatype}, got {tensor.datatype}")
    try:
        values = tensor.as_numpy().reshape(-1)
    # ValueError: data that does not fill the declared shape, or JSON NaN in an integer tensor; OverflowError:
    # JSON Infinity in an integer tensor.
    except (ValueError, OverflowError) as error:
        raise InvalidInput(f"input {tensor.name}: {first_line(error)}") from None
    if values.dtype.kind == "f" and not np.isfinite(values).all():  # NaN slips past every range check
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidInput(f"input {tensor.name} must hold finite numbers, got {values[row]} at index {row}")
    return values


def v2_column(tensor: InferInput, batch: int) -> np.ndarray:
    """One V2 parameter input as `batch` values ([1] is repeated for every prompt)."""
    values = v2_values(tensor)
    if values.size == 1 and batch > 1:
        values = np.repeat(values, batch)
    if values.size != batch:
        raise InvalidInput(f"input {tensor.name} has {values.size} values for {batch} prompts (give 1 or {batch})")
    return values


def v2_requests(request: InferRequest) -> list[tuple[str, GenerationParams]]:
    """The prompt and parameters of each row of a V2 request; InvalidInput names the input at fault."""
    tensors = {tensor.name: tensor for tensor in request.inputs}
    unknown = sorted(set(tensors) - set(V2_INPUTS))
    if unknown:
        raise InvalidInput(f"unknown input {', '.join(unknown)} (known: {', '.join(V2_INPUTS)})")
    if "PROMPT" not in tensors:
        raise InvalidInput("input PROMPT is required (BYTES, one text per clip)")
    try:  # binary inputs arrive as bytes, JSON ones as str
        texts = [p.decode() if isinstance(p, bytes) else str(p) for p in v2_values(tensors["PROMPT"])]
    except UnicodeDecodeError:
        raise InvalidInput("input PROMPT must be UTF-8 text") from None
    if not texts:
        raise InvalidInput("input PROMPT is empty: give one text per clip")
    columns = {
        V2_INPUTS[name][1]: v2_column(tensor, len(texts)) for name, tensor in tensors.items() if name != "PROMPT"
    }
    rows = []
    for row, text in enumerate(texts):
        values = {name: PARAM_TYPES[name](column[row]) for name, column in columns.items()}
        if values.get("seed", 0) < 0:
            values["seed"] = None
        rows.append((text, GenerationParams(**values)))
    return rows


def v2_output(name: str, array: np.ndarray) -> InferOutput:
    """One V2 output tensor of the declared datatype, its data as raw bytes."""
    output = InferOutput(name, list(array.shape), V2_OUTPUTS[name][0])
    # Raw bytes, which KServe re-encodes as JSON for a REST client that asks for it; an array left in `data`
    # breaks its gRPC encoding (it tests the array's truth value).
    output.set_data_from_numpy(array, binary_data=True)
    return output
