"""A real Triton Inference Server (2.51, from the nvidia-pytriton wheel in `.venv-triton`) serving the repository
that components/triton_repository.py writes: the `musicgen` generation model (Python backend, decoupled) streams
over real BLS calls to the four models. Those four run on the Python backend through
serving/triton/onnx_standin.py (ONNX Runtime in the model), because this Triton has no onnxruntime backend.

The clients are tritonclient's: HTTP in this process, the gRPC stream in a subprocess (tritonclient.grpc cannot
share a process with kserve, which other test modules import). Skipped without `.venv-triton` (`make triton-env`).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.triton_repository import TritonSettings, write_repository
from serving.triton.server import TritonServer, TritonUnavailable, triton_home, with_onnx_stand_ins

pytestmark = pytest.mark.integration

try:
    triton_home()
except TritonUnavailable as error:
    pytestmark = [pytestmark, pytest.mark.skip(reason=str(error))]

PROMPT, DURATION = "calm piano", 1.0

# One streamed request through tritonclient.grpc: argv is the server, the request's tensors as JSON
# ({name: value}; the repository's data types) and where to save the concatenated AUDIO; prints what arrived.
GRPC_STREAM = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient

url, request, saved = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
types = {"PROMPT": ("BYTES", object), "TOP_K": ("INT32", np.int32), "SEED": ("INT64", np.int64)}
chunks, errors = [], []
client = grpcclient.InferenceServerClient(url)
client.start_stream(callback=lambda result, error: errors.append(str(error)) if error else chunks.append(result))
inputs = []
for name, value in request.items():
    kind, dtype = types.get(name, ("FP32", np.float32))
    array = np.array([value.encode() if kind == "BYTES" else value], dtype=dtype)
    tensor = grpcclient.InferInput(name, list(array.shape), kind)
    tensor.set_data_from_numpy(array)
    inputs.append(tensor)
client.async_stream_infer("musicgen", inputs, enable_empty_final_response=True)
client.stop_stream()  # waits for the responses in flight
audio = [r.as_numpy("AUDIO") for r in chunks if r.as_numpy("AUDIO") is not None]
final = [r.get_response(as_json=True)["parameters"].get("triton_final_response", {}).get("bool_param") for r in chunks]
rates = {int(r.as_numpy("SAMPLE_RATE")[0]) for r in chunks if r.as_numpy("SAMPLE_RATE") is not None}
np.save(saved, np.concatenate(audio) if audio else np.zeros(0, np.float32))
report = {"chunks": len(audio), "errors": errors, "final": final[-1] if final else None, "rates": sorted(rates)}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def triton(micro_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("real-triton")
    repository = write_repository(micro_export.out_dir, root / "written", TritonSettings(link=False, chunk_frames=10))
    served = with_onnx_stand_ins(repository, root / "served")
    server = TritonServer(served, log=root / "tritonserver.log")
    with server:
        yield server


def test_triton_loads_every_model_of_the_repository(triton):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton.http_url)
    assert client.is_server_live() and client.is_server_ready()
    models = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert set(models) == {"musicgen", "text_encoder", "decoder", "decoder_with_past", "codec_decoder"}
    assert all(entry["state"] == "READY" for entry in models.values())
    assert all(client.is_model_ready(name) for name in models)
    assert client.get_server_metadata()["version"].startswith("2.")
    metadata = client.get_model_metadata("musicgen")
    assert {tensor["name"] for tensor in metadata["inputs"]} >= {"PROMPT", "DURATION", "SEED"}
    assert {tensor["name"] for tensor in metadata["outputs"]} == {"AUDIO", "SAMPLE_RATE"}
    config = client.get_model_config("musicgen")
    assert config["model_transaction_policy"]["decoupled"] is True
    # The stand-ins keep the ONNX models' interfaces: the graph's own tensor names.
    assert [tensor["name"] for tensor in client.get_model_metadata("codec_decoder")["inputs"]] == ["audio_codes"]


def _stream(triton, request: dict, saved: Path) -> dict:
    """One streamed request through tritonclient.grpc in a subprocess; what it received."""
    run = subprocess.run(
        [sys.executable, "-c", GRPC_STREAM, triton.grpc_url, json.dumps(request), str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:] + triton.tail()
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("request_params", "local_params"),
    [
        ({"TEMPERATURE": 0.0}, {"temperature": 0.0}),  # greedy
        ({"SEED": 7, "TOP_K": 50}, {"seed": 7, "top_k": 50}),  # sampled: the seed reaches the generator
    ],
    ids=["greedy", "seeded"],
)
def test_musicgen_streams_over_grpc_what_the_onnx_generator_generates(
    triton, micro_export, tmp_path: Path, request_params: dict, local_params: dict
):
    from model import GenerationParams, OnnxMusicGenerator

    report = _stream(triton, {"PROMPT": PROMPT, "DURATION": DURATION, **request_params}, tmp_path / "audio.npy")
    assert report["errors"] == [] and report["final"] is True and report["chunks"] > 1, (report, triton.tail())
    local = OnnxMusicGenerator.load(micro_export.out_dir, threads=1)
    assert report["rates"] == [local.sample_rate]
    streamed = np.load(tmp_path / "audio.npy")
    assert streamed.dtype == np.float32 and streamed.shape == (round(DURATION * local.sample_rate),)
    whole = local.generate([PROMPT], GenerationParams(duration=DURATION, **local_params)).audio[0]
    # Same graphs, same ONNX Runtime, one thread each: only float rounding may differ (0.1% of the peak).
    np.testing.assert_allclose(streamed, whole, atol=1e-3 * max(1e-6, float(np.abs(whole).max())))


def test_a_request_without_a_prompt_gets_the_models_error_by_name(triton, tmp_path: Path):
    report = _stream(triton, {"DURATION": DURATION}, tmp_path / "audio.npy")
    assert report["chunks"] == 0 and any("PROMPT" in error for error in report["errors"]), report
