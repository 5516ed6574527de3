"""NaN and +-Infinity on every route: Python's json reads those non-standard literals as floats and query strings
spell them `nan`/`inf`, and they slip past every range check (NaN compares false with any bound). Each route must
answer a 4xx naming the field, in strict JSON (a stock FastAPI 422 echoes the input and failed to serialise: a 500).

The front runs in-process (TestClient); the predictor is a real `python -m serving.predictor` subprocess, reached
with httpx and tritonclient's HTTP client, as tests/serving/test_predictor.py reaches it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from serving.front.app import FrontSettings, create_app
from serving.json_safe import json_safe
from serving.launch import start_predictor
from serving.sources import LocalSource

# The JSON literal Python's json reads as each non-finite float, and how a query string spells it.
CONSTANTS = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
FRONT_FIELDS = ["duration", "guidance", "temperature", "top_k", "top_p", "seed"]
V1_FIELDS = FRONT_FIELDS  # the predictor's V1 instances take the front's names
V2_INPUTS = {"DURATION": "FP32", "GUIDANCE_SCALE": "FP32", "TEMPERATURE": "FP32", "TOP_P": "FP32"}
V2_INT_INPUTS = {"TOP_K": "INT32", "SEED": "INT64"}
PREDICT = "/v1/models/musicgen:predict"
INFER = "/v2/models/musicgen/infer"


def strict_json(text: str) -> Any:
    """`text` parsed as standard JSON: NaN, Infinity and -Infinity are errors, as in every strict reader."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def body_with(field: str, literal: str) -> str:
    """A generation request whose `field` is the bare JSON literal (json.dumps would write a quoted string)."""
    return f'{{"prompt": "jazz", "duration": 1, "{field}": {literal}}}'


@pytest.fixture(scope="module")
def front(micro_dir: Path) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a handler that fails must show as the 500 a client sees, not a test error.
    app = create_app(LocalSource(micro_dir), FrontSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# -- the front -----------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("field", FRONT_FIELDS)
def test_rest_answers_a_strict_json_422_naming_the_field(front, field, literal):
    answer = front.post("/v1/generate", content=body_with(field, literal), headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    errors = strict_json(answer.text)["detail"]
    assert [error["loc"] for error in errors] == [["body", field]]
    assert errors[0]["input"] == repr(float(literal))  # the value, named as a string


@pytest.mark.integration
@pytest.mark.parametrize("field", ["prompt", "tempo"])  # a string field, and an unknown one (refused as extra)
def test_rest_non_finite_input_in_any_field_still_serialises(front, field):
    answer = front.post("/v1/generate", content=body_with(field, "NaN"), headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in strict_json(answer.text)["detail"]] == [["body", field]]


@pytest.mark.integration
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("field", FRONT_FIELDS)
def test_server_sent_events_answer_a_strict_json_422_naming_the_field(front, field, literal):
    query = {"prompt": "jazz", "duration": 1, field: CONSTANTS[literal]}
    answer = front.get("/v1/generate/stream", params=query)
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in strict_json(answer.text)["detail"]] == [["query", field]]


@pytest.mark.integration
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("field", FRONT_FIELDS)
def test_websocket_answers_an_error_naming_the_field_and_closes_1008(front, field, literal):
    with front.websocket_connect("/v1/stream") as ws:
        ws.send_text(body_with(field, literal))
        reply = ws.receive()
        closing = ws.receive()
    assert reply["type"] == "websocket.send"
    message = strict_json(reply["text"])
    assert message["type"] == "error" and message["status"] == 422 and message["field"] == field
    assert message["message"].startswith(f"{field}: ") and "finite" in message["message"]
    assert closing == {"type": "websocket.close", "code": 1008, "reason": ""}


def test_json_safe_writes_non_finite_floats_as_strings_at_any_depth():
    value = {"a": [1.5, math.nan, {"b": (math.inf, -math.inf)}], "c": "nan", "d": 2}
    assert json_safe(value) == {"a": [1.5, "nan", {"b": ["inf", "-inf"]}], "c": "nan", "d": 2}
    json.dumps(json_safe(value), allow_nan=False)  # raises if anything non-finite is left


# -- the front's OpenAPI document ----------------------------------------------------------------------------------


def generation_operations(schema: dict) -> list[dict]:
    return [schema["paths"]["/v1/generate"]["post"], schema["paths"]["/v1/generate/stream"]["get"]]


@pytest.mark.integration
def test_openapi_declares_api_key_security_only_when_a_key_is_set(micro_dir):
    with TestClient(create_app(LocalSource(micro_dir), FrontSettings())) as client:
        open_schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in open_schema.get("components", {})
    for operation in generation_operations(open_schema):
        assert "security" not in operation and "401" not in operation["responses"]

    with TestClient(create_app(LocalSource(micro_dir), FrontSettings(api_key="s3cret"))) as client:
        keyed_schema = client.get("/openapi.json").json()
    schemes = keyed_schema["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"http", "apiKey"}
    assert {scheme.get("in") for scheme in schemes.values()} == {None, "header", "query"}
    for operation in generation_operations(keyed_schema):
        assert operation["security"] and "401" in operation["responses"]


# -- the predictor -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(micro_dir: Path) -> Iterator[str]:
    with start_predictor(micro_dir) as (http_url, _):
        yield http_url


def post_json(url: str, text: str) -> httpx.Response:
    return httpx.post(url, content=text, headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.e2e
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("field", V1_FIELDS)
def test_v1_answers_a_400_naming_the_instance_and_field(predictor, field, literal):
    answer = post_json(predictor + PREDICT, f'{{"instances": [{body_with(field, literal)}]}}')
    assert answer.status_code == 400, answer.text
    assert f"instance 0: {field} must be a finite number" in strict_json(answer.text)["error"]


@pytest.mark.e2e
def test_v1_streaming_request_is_refused_the_same_way(predictor):
    answer = post_json(predictor + PREDICT, f'{{"instances": [{body_with("guidance", "NaN")}], "stream": true}}')
    assert answer.status_code == 400, answer.text
    assert "instance 0: guidance must be a finite number" in strict_json(answer.text)["error"]


def v2_json_body(name: str, datatype: str, literal: str) -> str:
    prompt = json.dumps({"name": "PROMPT", "shape": [1], "datatype": "BYTES", "data": ["jazz"]})
    value = f'{{"name": "{name}", "shape": [1], "datatype": "{datatype}", "data": [{literal}]}}'
    return f'{{"inputs": [{prompt}, {value}]}}'


@pytest.mark.e2e
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("name", [*V2_INPUTS, *V2_INT_INPUTS])
def test_v2_json_answers_a_400_naming_the_input(predictor, name, literal):
    datatype = {**V2_INPUTS, **V2_INT_INPUTS}[name]
    answer = post_json(predictor + INFER, v2_json_body(name, datatype, literal))
    assert answer.status_code == 400, answer.text
    assert f"input {name}" in strict_json(answer.text)["error"]


@pytest.mark.e2e
@pytest.mark.parametrize("literal", CONSTANTS)
@pytest.mark.parametrize("name", V2_INPUTS)
def test_v2_binary_tensors_answer_a_400_naming_the_input(predictor, name, literal):
    # tritonclient sends the values as raw FP32 bytes: no JSON parser sees them, the protocol's check must.
    arrays = {"PROMPT": np.array([b"jazz"], dtype=np.object_), name: np.array([float(literal)], dtype=np.float32)}
    inputs = []
    for input_name, array in arrays.items():
        tensor = triton_http.InferInput(input_name, list(array.shape), "BYTES" if input_name == "PROMPT" else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = triton_http.InferenceServerClient(predictor.removeprefix("http://"))
    with pytest.raises(InferenceServerException) as error:
        client.infer("musicgen", inputs)
    assert error.value.status() == "400"
    assert f"input {name} must hold finite numbers" in error.value.message()


@pytest.mark.e2e
def test_v2_request_kserve_itself_refuses_still_gets_a_strict_json_422(predictor):
    # A NaN where KServe's own request model wants an integer (a shape): its 422 echoes the input.
    body = '{"inputs": [{"name": "PROMPT", "shape": [NaN], "datatype": "BYTES", "data": ["jazz"]}]}'
    answer = post_json(predictor + INFER, body)
    assert answer.status_code == 422, answer.text
    errors = strict_json(answer.text)["detail"]
    # One error per member of KServe's body type (InferenceRequest | bytes); the request model's names the shape.
    assert any(error["loc"][-2:] == ["shape", 0] and error["input"] == "nan" for error in errors)
