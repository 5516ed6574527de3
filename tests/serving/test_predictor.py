"""The KServe predictor end to end: a real `python -m serving.predictor` on the micro model, reached the way
clients reach it (tritonclient HTTP and gRPC, V1 JSON, V1 Server-Sent Events).

This process imports neither kserve nor tritonclient.grpc: the server runs in a subprocess and the Triton gRPC
client in another, since those two cannot share a process (their protobuf descriptors clash).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from serving.launch import PredictorProcess, start_predictor

pytestmark = pytest.mark.e2e

DURATION = 0.5
PREDICT = "/v1/models/musicgen:predict"


@pytest.fixture(scope="module")
def predictor(micro_dir: Path):
    with start_predictor(micro_dir) as urls:
        yield urls


@pytest.fixture(scope="module")
def sample_rate(micro_dir: Path) -> int:
    return json.loads((micro_dir / "config.json").read_text())["audio_encoder"]["sampling_rate"]


def triton_inputs(prompts: list[str], **values: np.ndarray) -> list[triton_http.InferInput]:
    """PROMPT plus any named inputs, their V2 datatypes taken from the arrays."""
    arrays = {"PROMPT": np.array([p.encode() for p in prompts], dtype=np.object_), **values}
    types = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}
    inputs = []
    for name, array in arrays.items():
        tensor = triton_http.InferInput(name, list(array.shape), types.get(array.dtype, "BYTES"))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def sse_events(text: str) -> list[dict]:
    return [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n") if block.strip()]


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* write them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_listens_on_loopback_only(predictor):
    http_url, grpc_url = predictor
    for port in (int(http_url.rsplit(":", 1)[1]), int(grpc_url.rsplit(":", 1)[1])):
        # 127.0.0.1, or gRPC's IPv4-mapped ::ffff:127.0.0.1; KServe alone would bind 0.0.0.0 and [::]
        assert listening_addresses(port) in ({"0100007F"}, {"0000000000000000FFFF00000100007F"})


def test_triton_http_health_metadata_and_infer(predictor, sample_rate):
    client = triton_http.InferenceServerClient(predictor[0].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("musicgen")
    metadata = client.get_model_metadata("musicgen")
    inputs = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
    assert inputs == {
        "PROMPT": "BYTES",
        "DURATION": "FP32",
        "GUIDANCE_SCALE": "FP32",
        "TEMPERATURE": "FP32",
        "TOP_K": "INT32",
        "TOP_P": "FP32",
        "SEED": "INT64",
    }
    assert {tensor["name"]: tensor["datatype"] for tensor in metadata["outputs"]}["AUDIO"] == "FP32"

    duration = np.array([DURATION], dtype=np.float32)
    result = client.infer("musicgen", triton_inputs(["calm piano", "fast drums"], DURATION=duration))
    assert result.as_numpy("AUDIO").shape == (2, round(DURATION * sample_rate))
    assert result.as_numpy("AUDIO").dtype == np.float32
    assert result.as_numpy("SAMPLE_RATE").tolist() == [sample_rate]

    def seeded() -> np.ndarray:
        seed = np.array([1234], dtype=np.int64)
        # JSON outputs this time (binary_data=False), the other half of KServe's REST encoding
        outputs = [triton_http.InferRequestedOutput(name, binary_data=False) for name in ("AUDIO", "SEED")]
        answer = client.infer("musicgen", triton_inputs(["jazz"], DURATION=duration, SEED=seed), outputs=outputs)
        assert answer.as_numpy("SEED").tolist() == [1234]
        return answer.as_numpy("AUDIO")

    first, second = seeded(), seeded()
    assert first.shape == (1, round(DURATION * sample_rate))
    np.testing.assert_array_equal(first, second)


def test_v2_rest_takes_plain_json(predictor, sample_rate):
    # What curl or a non-Triton client sends: tensors as JSON lists, no binary extension.
    inputs = [
        {"name": "PROMPT", "shape": [2, 1], "datatype": "BYTES", "data": ["jazz", "rock"]},
        {"name": "DURATION", "shape": [1], "datatype": "FP32", "data": [DURATION]},
        {"name": "SEED", "shape": [2], "datatype": "INT64", "data": [7, -1]},
    ]
    response = httpx.post(predictor[0] + "/v2/models/musicgen/infer", json={"inputs": inputs}, timeout=120)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    samples = round(DURATION * sample_rate)
    assert outputs["AUDIO"]["shape"] == [2, samples] and len(outputs["AUDIO"]["data"]) == 2 * samples
    assert outputs["SAMPLE_RATE"]["data"] == [sample_rate]
    assert outputs["SEED"]["data"][0] == 7 and outputs["SEED"]["data"][1] >= 0  # -1 drew a seed, reported here


GRPC_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
def infer(names, **values):
    arrays = {"PROMPT": np.array([n.encode() for n in names], dtype=np.object_), **values}
    types = {"float32": "FP32", "int32": "INT32", "int64": "INT64", "object": "BYTES"}
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), types[str(array.dtype)])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer("musicgen", inputs)

metadata = client.get_model_metadata("musicgen", as_json=True)
duration = np.array([0.5], dtype=np.float32)
batch = infer(["calm piano", "fast drums"], DURATION=duration)
seed = np.array([99], dtype=np.int64)
first = infer(["jazz"], DURATION=duration, SEED=seed).as_numpy("AUDIO")
second = infer(["jazz"], DURATION=duration, SEED=seed).as_numpy("AUDIO")
try:
    infer(["jazz"], DURATION=np.array([1000.0], dtype=np.float32))
    error = None
except InferenceServerException as exc:
    error = {"status": str(exc.status()), "message": exc.message()}
print(json.dumps({
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("musicgen"),
    "inputs": [tensor["name"] for tensor in metadata["inputs"]],
    "outputs": [tensor["name"] for tensor in metadata["outputs"]],
    "shape": list(batch.as_numpy("AUDIO").shape),
    "sample_rate": batch.as_numpy("SAMPLE_RATE").tolist(),
    "seeded_equal": bool(np.array_equal(first, second)),
    "error": error,
}))
"""


def test_triton_grpc_health_metadata_and_infer(predictor, sample_rate):
    run = subprocess.run([sys.executable, "-c", GRPC_CLIENT, predictor[1]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["inputs"][0] == "PROMPT" and "SEED" in answer["inputs"]
    assert answer["outputs"] == ["AUDIO", "SAMPLE_RATE", "SEED"]
    assert answer["shape"] == [2, round(DURATION * sample_rate)]
    assert answer["sample_rate"] == [sample_rate]
    assert answer["seeded_equal"]
    assert "INVALID_ARGUMENT" in answer["error"]["status"]
    assert "duration" in answer["error"]["message"]


def test_v1_predict_returns_a_wav_per_instance(predictor, sample_rate):
    instances = [
        {"prompt": "calm piano", "duration": DURATION, "guidance": 3.0, "seed": 5},
        {"prompt": "fast drums", "duration": 2 * DURATION, "temperature": 0.8, "top_k": 50},
    ]
    response = httpx.post(predictor[0] + PREDICT, json={"instances": instances}, timeout=120)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for instance, prediction in zip(instances, predictions, strict=True):
        audio, rate = sf.read(io.BytesIO(base64.b64decode(prediction["audio_wav_base64"])), dtype="float32")
        assert rate == prediction["sample_rate"] == sample_rate
        assert audio.shape == (round(instance["duration"] * sample_rate),)
        assert prediction["duration"] == pytest.approx(instance["duration"])
        assert isinstance(prediction["seed"], int)
    assert predictions[0]["seed"] == 5


def test_v1_stream_sends_sse_header_chunks_and_stats(predictor, sample_rate):
    instance = {"prompt": "calm piano", "duration": DURATION, "seed": 11}
    with httpx.stream("POST", predictor[0] + PREDICT, json={"instances": [instance], "stream": True}) as response:
        assert response.status_code == 200
        events = sse_events(response.read().decode())
    header, chunks, end = events[0], events[1:-1], events[-1]
    assert header == {"event": "header", "sample_rate": sample_rate, "format": "pcm_s16le", "channels": 1}
    assert len(chunks) >= 2 and all(event["event"] == "chunk" for event in chunks)
    streamed = np.concatenate([np.frombuffer(base64.b64decode(event["audio"]), dtype="<i2") for event in chunks])
    assert end["event"] == "end" and end["seed"] == 11
    assert streamed.size == end["samples"] == round(DURATION * sample_rate)
    assert end["first_chunk_s"] > 0 and end["real_time_factor"] > 0

    # The same seed without streaming gives the same clip (up to 16-bit rounding).
    whole = httpx.post(predictor[0] + PREDICT, json={"instances": [instance]}, timeout=120).json()["predictions"][0]
    wav, _ = sf.read(io.BytesIO(base64.b64decode(whole["audio_wav_base64"])), dtype="int16")
    assert np.max(np.abs(wav.astype(np.int32) - streamed)) <= 2


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"instances": [{"duration": 1.0}]}, "prompt"),
        ({"instances": [{"prompt": "jazz", "duration": 1000}]}, "duration"),
        ({"instances": [{"prompt": "jazz", "duration": "long"}]}, "duration"),
        ({"instances": [{"prompt": "jazz", "top_k": 2.5}]}, "top_k"),
        ({"instances": [{"prompt": "jazz", "durration": 1.0}]}, "durration"),
        ({"instances": [{"prompt": "a"}, {"prompt": "b"}], "stream": True}, "one instance"),
        ({"instances": []}, "instances"),
    ],
)
def test_v1_bad_input_is_a_400_naming_the_field(predictor, body, named):
    response = httpx.post(predictor[0] + PREDICT, json=body, timeout=60)
    assert response.status_code == 400
    assert named in response.json()["error"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"DURATION": np.array([0.5], dtype=np.int32)}, "DURATION must be FP32"),
        ({"DURATION": np.array([0.5, 0.5, 0.5], dtype=np.float32)}, "DURATION has 3 values"),
        ({"GUIDANCE_SCALE": np.array([50.0], dtype=np.float32)}, "guidance"),
        ({"VOLUME": np.array([1.0], dtype=np.float32)}, "unknown input VOLUME"),
    ],
)
def test_v2_bad_input_is_a_400_naming_the_input(predictor, values, named):
    client = triton_http.InferenceServerClient(predictor[0].removeprefix("http://"))
    with pytest.raises(InferenceServerException) as error:
        client.infer("musicgen", triton_inputs(["jazz", "rock"], **values))
    assert error.value.status() == "400"
    assert named in error.value.message()


def test_v2_missing_prompt_is_a_400(predictor):
    tensor = triton_http.InferInput("DURATION", [1], "FP32")
    tensor.set_data_from_numpy(np.array([0.5], dtype=np.float32))
    client = triton_http.InferenceServerClient(predictor[0].removeprefix("http://"))
    with pytest.raises(InferenceServerException) as error:
        client.infer("musicgen", [tensor])
    assert error.value.status() == "400" and "PROMPT" in error.value.message()


def test_an_onnx_export_is_served_with_the_onnx_backend(micro_export, sample_rate):
    # The ServingRuntime passes no --backend and the deploy step serves the export: "auto" must find ONNX.
    with start_predictor(micro_export.out_dir) as (http_url, _):
        client = triton_http.InferenceServerClient(http_url.removeprefix("http://"))
        seed = np.array([3], dtype=np.int64)
        result = client.infer("musicgen", triton_inputs(["jazz"], DURATION=np.array([DURATION], np.float32), SEED=seed))
    assert result.as_numpy("AUDIO").shape == (1, round(DURATION * sample_rate))
    assert np.all(np.isfinite(result.as_numpy("AUDIO")))


def test_full_queue_is_a_503_and_sigterm_stops_cleanly(micro_dir):
    server = PredictorProcess(micro_dir, max_queue=1)
    try:
        server.wait_ready()
        assert f"musicgen predictor ready: {server.http_url} (V1, V2), grpc {server.grpc_url} (V2)" in server.log()
        long = {"prompt": "jazz", "duration": 20.0, "seed": 1}
        with httpx.Client(base_url=server.http_url, timeout=120) as client:
            stream = {"instances": [long], "stream": True}
            with client.stream("POST", PREDICT, json=stream) as running:
                # Its first chunk: it is generating, so it no longer counts against the queue.
                lines = running.iter_lines()
                while '"event": "chunk"' not in next(lines):
                    pass
                with client.stream("POST", PREDICT, json=stream) as queued:
                    # Submitted before its status line goes out: it fills the queue of one.
                    assert queued.status_code == 200

                    refused = client.post(PREDICT, json={"instances": [{"prompt": "jazz", "duration": 0.5}]})
                    assert refused.status_code == 503
                    assert "queue is full" in refused.json()["error"]
                    assert refused.headers["retry-after"] == "1"

                    v2 = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
                    with pytest.raises(InferenceServerException) as error:
                        v2.infer("musicgen", triton_inputs(["jazz"], DURATION=np.array([0.5], dtype=np.float32)))
                    assert error.value.status() == "503" and "queue is full" in error.value.message()
        # Both streams were closed mid-generation: the engine lets them go, and SIGTERM stops everything.
        assert server.stop() == 0
        assert "generation engine stopped" in server.log()
    finally:
        server.stop()
        server.cleanup()
