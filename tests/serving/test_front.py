"""The FastAPI front: WAV over REST, SSE and WebSocket streaming, limits, cancellation, validation, auth, CORS,
health and metrics, the request log hook, and the remote source against a stand-in V2 server.

In-process tests use Starlette's TestClient; those marked e2e run the front under uvicorn on 127.0.0.1 and talk to
it over real sockets (httpx for SSE, the websockets client for WebSocket). A gated generator holds a generation
after its first chunk until the test lets it go, so "a stream is running" never depends on timing.
"""

import asyncio
import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype
from websockets.sync.client import connect

from model.generation_params import GenerationParams
from model.generator import BaseMusicGenerator
from model.loader import load_generator
from serving.front.admission import Admission, Overloaded
from serving.front.app import FrontSettings, create_app, serve_in_thread
from serving.sources import LocalSource, RemoteSource

pytestmark = pytest.mark.integration

SAMPLE_RATE = 32000  # the micro model's


class GatedGenerator(BaseMusicGenerator):
    """A real generator whose streams pause after their first chunk until `gate` is set."""

    def __init__(self, inner: BaseMusicGenerator, gate: threading.Event) -> None:
        self.inner, self.gate = inner, gate
        self.card, self.sample_rate = inner.card, inner.sample_rate

    def stream(self, prompts: list[str], params: GenerationParams, progress=None, **chunking: int) -> Iterator:
        for index, chunk in enumerate(self.inner.stream(prompts, params, progress, **chunking)):
            yield chunk
            if index == 0:
                self.gate.wait()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll until `condition` holds; the timeout only keeps a broken build from hanging."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def gauge(metrics_text: str, name: str) -> float:
    line = next(line for line in metrics_text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def ws_until_close(ws) -> tuple[list, int]:
    """Every message until the server closes (TestClient session): (messages, close code)."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message["code"]
        messages.append(message.get("bytes") if message.get("bytes") is not None else json.loads(message["text"]))


@pytest.fixture
def make_app(micro_dir) -> Callable[..., FastAPI]:
    def make(generator: BaseMusicGenerator | None = None, **settings) -> FastAPI:
        return create_app(LocalSource(generator or micro_dir), FrontSettings(**settings))

    return make


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a worker blocked


@pytest.fixture
def gated(micro_dir, gate) -> GatedGenerator:
    return GatedGenerator(load_generator(micro_dir), gate)


# -- REST ----------------------------------------------------------------------------------------------------------


def test_post_generate_answers_a_wav_of_the_asked_length_whose_seed_reproduces_it(make_app):
    logs: list[dict] = []
    with TestClient(make_app(request_log=logs.append)) as client:
        first = client.post("/v1/generate", json={"prompt": "calm piano", "duration": 1.0})
        assert first.status_code == 200 and first.headers["content-type"] == "audio/wav"
        audio, rate = sf.read(io.BytesIO(first.content), dtype="float32")
        assert rate == SAMPLE_RATE and audio.shape == (SAMPLE_RATE,)
        seed = int(first.headers["x-seed"])
        assert float(first.headers["x-first-chunk-ms"]) > 0 and float(first.headers["x-real-time-factor"]) > 0
        assert "first_chunk;dur=" in first.headers["server-timing"]

        again = client.post("/v1/generate", json={"prompt": "calm piano", "duration": 1.0, "seed": seed})
        assert again.headers["x-seed"] == str(seed)
        assert again.content == first.content

        wait_for(lambda: len(logs) == 2, "the request log")
    record = logs[0]
    assert record["prompt"] == "calm piano" and record["seed"] == seed and not record["cancelled"]
    assert record["params"]["duration"] == 1.0 and record["audio"].shape == (SAMPLE_RATE,)
    assert record["timing"]["first_chunk_ms"] > 0 and record["sample_rate"] == SAMPLE_RATE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "x" * 41),
        ("duration", 0),
        ("duration", 21),  # the micro model's limit is 20 s, below the settings' 30
        ("guidance", 0.5),
        ("temperature", -1),
        ("top_k", -1),
        ("top_p", 1.5),
        ("seed", -3),
        ("tempo", 120),  # unknown fields are refused, not ignored
    ],
)
def test_invalid_requests_get_a_422_naming_the_field_on_every_route(make_app, field, value):
    body = {"prompt": "ok", "duration": 1.0, field: value}
    with TestClient(make_app(max_prompt_chars=40)) as client:
        answer = client.post("/v1/generate", json=body)
        assert answer.status_code == 422
        assert [error["loc"] for error in answer.json()["detail"]] == [["body", field]]

        answer = client.get("/v1/generate/stream", params=body)
        assert answer.status_code == 422
        assert [error["loc"] for error in answer.json()["detail"]] == [["query", field]]

        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json(body)
            messages, code = ws_until_close(ws)
    assert code == 1008
    assert messages[0]["type"] == "error" and messages[0]["status"] == 422 and messages[0]["field"] == field


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (lambda ws: ws.send_text("{not json"), "not JSON"),
        (lambda ws: ws.send_bytes(b"\x00\x01"), "JSON text"),
        (lambda ws: ws.send_text("[1, 2]"), "JSON object"),
        (lambda ws: ws.send_json({"type": "dance"}), "unknown message type"),
    ],
)
def test_malformed_websocket_messages_get_an_error_and_close_1003(make_app, send, reason):
    with TestClient(make_app()) as client, client.websocket_connect("/v1/stream") as ws:
        send(ws)
        messages, code = ws_until_close(ws)
    assert code == 1003
    assert messages[0]["type"] == "error" and reason in messages[0]["message"]


# -- streaming -----------------------------------------------------------------------------------------------------


def test_websocket_streams_header_chunks_and_stats_in_process(make_app):
    with TestClient(make_app()) as client, client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "generate", "prompt": "drums", "duration": 1.0, "seed": 4})
        messages, code = ws_until_close(ws)
    header, *chunks, stats = messages
    assert code == 1000
    assert header == {"type": "header", "sample_rate": SAMPLE_RATE, "channels": 1, "format": "pcm16"}
    assert len(chunks) >= 2 and all(isinstance(chunk, bytes) for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) // 2 == SAMPLE_RATE == stats["samples"]
    assert stats["type"] == "stats" and stats["seed"] == 4 and not stats["cancelled"]


@pytest.mark.e2e
def test_websocket_streaming_over_a_real_server(make_app):
    logs: list[dict] = []
    with serve_in_thread(make_app(request_log=logs.append)) as url:
        with connect(url.replace("http", "ws") + "/v1/stream") as ws:
            ws.send(json.dumps({"prompt": "ambient pads", "duration": 1.5}))
            header = json.loads(ws.recv())
            chunks, final = [], None
            for message in ws:
                if isinstance(message, bytes):
                    chunks.append(np.frombuffer(message, dtype="<i2"))
                else:
                    final = json.loads(message)
        assert ws.close_code == 1000
        wait_for(lambda: len(logs) == 1, "the request log")
    assert header["sample_rate"] == SAMPLE_RATE and header["format"] == "pcm16"
    assert len(chunks) >= 2 and sum(chunk.size for chunk in chunks) == round(1.5 * SAMPLE_RATE)
    assert final["type"] == "stats" and final["samples"] == round(1.5 * SAMPLE_RATE)
    assert 0 < final["first_chunk_ms"] <= final["generation_ms"] and final["real_time_factor"] > 0
    assert isinstance(final["seed"], int) and logs[0]["seed"] == final["seed"]
    streamed = np.concatenate(chunks).astype(np.float32) / 32767
    np.testing.assert_allclose(streamed, logs[0]["audio"], atol=1 / 32767)


@pytest.mark.e2e
def test_server_sent_events_stream_header_chunks_and_stats(make_app):
    with serve_in_thread(make_app()) as url:
        events = []
        with httpx.stream("GET", f"{url}/v1/generate/stream", params={"prompt": "bass", "duration": 1.0}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event, line[6:]))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "header" and kinds[-1] == "stats" and kinds.count("chunk") >= 2
    assert json.loads(events[0][1]) == {"sample_rate": SAMPLE_RATE, "channels": 1, "format": "pcm16"}
    samples = sum(len(base64.b64decode(data)) // 2 for kind, data in events if kind == "chunk")
    stats = json.loads(events[-1][1])
    assert samples == SAMPLE_RATE == stats["samples"] and stats["first_chunk_ms"] > 0


# -- cancellation and limits ---------------------------------------------------------------------------------------


def test_a_cancel_message_stops_the_stream_and_frees_its_slot_at_once(make_app, gated, gate):
    logs: list[dict] = []
    app = make_app(gated, request_log=logs.append)
    engine = app.state.front.source.engine
    with TestClient(app) as client:
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"prompt": "long", "duration": 15.0})
            assert ws.receive_json()["type"] == "header"
            ws.receive_bytes()  # the generation now waits at the gate, holding its slot
            assert gauge(client.get("/metrics").text, "musicops_front_active_streams") == 1
            ws.send_json({"type": "cancel"})
            messages, code = ws_until_close(ws)
        assert code == 1000 and messages[-1]["type"] == "stats" and messages[-1]["cancelled"]
        # The slot is free while the worker is still held at the gate: the front did not wait for the model.
        assert gauge(client.get("/metrics").text, "musicops_front_active_streams") == 0
        gate.set()
        wait_for(lambda: engine.active == 0, "the engine to drop the cancelled batch")
        wait_for(lambda: len(logs) == 1, "the request log")
    assert logs[0]["cancelled"] and logs[0]["audio"].size < 15 * SAMPLE_RATE


@pytest.mark.e2e
def test_a_websocket_client_that_disconnects_frees_its_generation(make_app, gated, gate):
    logs: list[dict] = []
    app = make_app(gated, request_log=logs.append)
    with serve_in_thread(app) as url:
        with connect(url.replace("http", "ws") + "/v1/stream") as ws:
            ws.send(json.dumps({"prompt": "long", "duration": 15.0}))
            json.loads(ws.recv())
            assert isinstance(ws.recv(), bytes)
        # closed mid-stream, the generation still held at the gate
        wait_for(lambda: gauge(httpx.get(f"{url}/metrics").text, "musicops_front_active_streams") == 0, "the slot")
        wait_for(lambda: len(logs) == 1, "the request log")
        gate.set()
        wait_for(lambda: app.state.front.source.engine.active == 0, "the engine to stop")
        assert 'musicops_front_requests_total{route="/v1/stream",status="1000"}' in httpx.get(f"{url}/metrics").text
    assert logs[0]["cancelled"]


@pytest.mark.e2e
def test_a_server_sent_events_client_that_disconnects_frees_its_generation(make_app, gated, gate):
    logs: list[dict] = []
    app = make_app(gated, request_log=logs.append)
    with serve_in_thread(app) as url:
        params = {"prompt": "long", "duration": 15.0}
        with httpx.stream("GET", f"{url}/v1/generate/stream", params=params) as answer:
            lines = answer.iter_lines()
            assert next(line for line in lines if line.startswith("event: chunk"))
        wait_for(lambda: gauge(httpx.get(f"{url}/metrics").text, "musicops_front_active_streams") == 0, "the slot")
        wait_for(lambda: len(logs) == 1, "the request log")
        gate.set()
    assert logs[0]["cancelled"]


def test_a_full_front_answers_429_with_retry_after_on_every_route(make_app, gated, gate):
    app = make_app(gated, max_concurrent_streams=1, max_queue=0, retry_after_s=3)
    with TestClient(app) as client:
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_json({"prompt": "holds the only slot", "duration": 2.0})
            assert ws.receive_json()["type"] == "header"
            ws.receive_bytes()

            answer = client.post("/v1/generate", json={"prompt": "one more", "duration": 1.0})
            assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
            assert "busy" in answer.json()["detail"]
            answer = client.get("/v1/generate/stream", params={"prompt": "one more", "duration": 1.0})
            assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
            with client.websocket_connect("/v1/stream") as other:
                other.send_json({"prompt": "one more", "duration": 1.0})
                messages, code = ws_until_close(other)
            assert code == 1013 and messages[0]["status"] == 429

            gate.set()
            messages, code = ws_until_close(ws)
            assert code == 1000 and messages[-1]["samples"] == 2 * SAMPLE_RATE
        assert client.post("/v1/generate", json={"prompt": "now there is room", "duration": 0.5}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'musicops_front_requests_total{route="/v1/generate",status="429"} 1.0' in metrics
    assert 'musicops_front_requests_total{route="/v1/stream",status="1013"} 1.0' in metrics


@pytest.mark.unit
def test_admission_queues_in_order_refuses_beyond_the_queue_and_survives_cancelled_waiters():
    async def scenario():
        admission = Admission(max_active=1, max_queue=2)
        first = await admission.enter()
        second = asyncio.create_task(admission.enter())
        third = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        assert admission.waiting == 2
        with pytest.raises(Overloaded):
            await admission.enter()
        second.cancel()  # a client that gives up while waiting
        await asyncio.gather(second, return_exceptions=True)
        first.release()
        first.release()  # idempotent
        lease = await third
        assert (admission.active, admission.waiting) == (1, 0)
        lease.release()
        return admission.active

    assert asyncio.run(scenario()) == 0


# -- access, health, metrics -----------------------------------------------------------------------------------------


def test_an_api_key_guards_the_generation_routes_and_nothing_else(make_app):
    body = {"prompt": "x", "duration": 0.3}
    with TestClient(make_app(api_key="s3cret")) as client:
        assert client.post("/v1/generate", json=body).status_code == 401
        assert client.post("/v1/generate", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/v1/generate", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/v1/generate", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/v1/generate/stream", params=body).status_code == 401
        assert client.get("/v1/generate/stream", params={**body, "api_key": "s3cret"}).status_code == 200

        with client.websocket_connect("/v1/stream") as ws:
            messages, code = ws_until_close(ws)
        assert code == 1008 and messages[0]["status"] == 401
        with client.websocket_connect("/v1/stream?api_key=s3cret") as ws:
            ws.send_json(body)
            messages, code = ws_until_close(ws)
        assert code == 1000 and messages[0]["type"] == "header"

        for open_route in ("/healthz", "/readyz", "/metrics", "/v1/info", "/", "/docs", "/openapi.json"):
            assert client.get(open_route).status_code == 200, open_route
        assert client.get("/v1/info").json()["auth_required"] is True


def test_cors_allows_the_configured_origins_and_exposes_the_timing_headers(make_app):
    with TestClient(make_app(cors_origins=["https://studio.example"])) as client:
        preflight = client.options(
            "/v1/generate",
            headers={"Origin": "https://studio.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://studio.example"
        answer = client.post(
            "/v1/generate", json={"prompt": "x", "duration": 0.3}, headers={"Origin": "https://studio.example"}
        )
        assert answer.headers["access-control-allow-origin"] == "https://studio.example"
        assert "X-Seed" in answer.headers["access-control-expose-headers"]
        other = client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def test_health_readiness_metrics_info_and_the_page(make_app):
    with TestClient(make_app()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"ready": True}
        info = client.get("/v1/info").json()
        assert info["sample_rate"] == SAMPLE_RATE and info["max_duration"] == 20.0 and not info["auth_required"]
        assert client.post("/v1/generate", json={"prompt": "x", "duration": 0.3}).status_code == 200
        metrics = client.get("/metrics").text
        page = client.get("/")
        assert "window.musicops" in client.get("/web/app.js").text
    assert page.status_code == 200 and "<canvas" in page.text
    assert 'musicops_front_requests_total{route="/v1/generate",status="200"} 1.0' in metrics
    assert 'musicops_front_requests_total{route="/readyz",status="200"} 1.0' in metrics
    for name in ("request_seconds_bucket", "first_chunk_seconds_bucket", "real_time_factor_bucket"):
        assert f'musicops_front_{name}{{le="+Inf",route="/v1/generate"}} 1.0' in metrics
    assert gauge(metrics, "musicops_front_active_streams") == 0


def test_two_apps_in_one_process_keep_their_own_metrics(make_app):
    with TestClient(make_app()) as one, TestClient(make_app()) as two:
        one.get("/healthz")
        assert 'route="/healthz"' in one.get("/metrics").text
        assert 'route="/healthz"' not in two.get("/metrics").text


def test_a_request_log_hook_that_raises_does_not_break_serving(make_app):
    def broken(record: dict) -> None:
        raise RuntimeError("the store is down")

    with TestClient(make_app(request_log=broken)) as client:
        assert client.post("/v1/generate", json={"prompt": "x", "duration": 0.3}).status_code == 200
        assert client.post("/v1/generate", json={"prompt": "y", "duration": 0.3}).status_code == 200


# -- the remote source, against a stand-in KServe V2 server ---------------------------------------------------------


def v2_stand_in(calls: list[dict]) -> FastAPI:
    """Just enough of the Open Inference Protocol (binary tensor extension included) to answer tritonclient:
    the predictor's tensor names, a 440 Hz sine at 16 kHz for the asked duration, 400 beyond 10 s."""
    app = FastAPI()
    rate = 16000

    @app.get("/v2/health/ready")
    @app.get("/v2/health/live")
    @app.get("/v2/models/musicgen/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2/models/musicgen")
    async def metadata() -> dict:
        inputs = [("PROMPT", "BYTES"), ("DURATION", "FP32"), ("GUIDANCE_SCALE", "FP32"), ("TEMPERATURE", "FP32")]
        inputs += [("TOP_K", "INT32"), ("TOP_P", "FP32"), ("SEED", "INT64")]
        return {
            "name": "musicgen",
            "platform": "stand-in",
            "inputs": [{"name": name, "datatype": kind, "shape": [-1]} for name, kind in inputs],
            "outputs": [
                {"name": "AUDIO", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "SAMPLE_RATE", "datatype": "INT32", "shape": [1]},
            ],
        }

    @app.post("/v2/models/musicgen/infer")
    async def infer(request: Request) -> Response:
        raw = await request.body()
        size = int(request.headers.get("inference-header-content-length", len(raw)))
        header, offset, values = json.loads(raw[:size]), size, {}
        for tensor in header["inputs"]:
            length = tensor["parameters"]["binary_data_size"]
            data = raw[offset : offset + length]
            offset += length
            if tensor["datatype"] == "BYTES":
                values[tensor["name"]] = deserialize_bytes_tensor(data)
            else:
                values[tensor["name"]] = np.frombuffer(data, dtype=triton_to_np_dtype(tensor["datatype"]))
        calls.append(values)
        duration = float(values["DURATION"][0])
        if duration > 10:
            return JSONResponse({"error": f"DURATION {duration} is beyond 10 s"}, status_code=400)
        audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(duration * rate)) / rate)).astype(np.float32)
        outputs = [
            {"name": "AUDIO", "datatype": "FP32", "shape": [1, audio.size], "parameters": {"binary_data_size": 0}},
            {"name": "SAMPLE_RATE", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}},
        ]
        outputs[0]["parameters"]["binary_data_size"] = audio.nbytes
        body = json.dumps({"model_name": "musicgen", "id": header.get("id", ""), "outputs": outputs}).encode()
        return Response(
            body + audio.tobytes() + np.array([rate], dtype=np.int32).tobytes(),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(body))},
        )

    return app


@pytest.mark.e2e
def test_the_remote_source_serves_a_v2_endpoint_through_the_front():
    # The lead can add the same checks against serving/predictor/ (start_predictor) once it lands.
    calls: list[dict] = []
    with serve_in_thread(v2_stand_in(calls)) as v2_url:
        source = RemoteSource(v2_url, "musicgen", chunk_seconds=0.25, max_duration=30.0)
        with TestClient(create_app(source, FrontSettings())) as client:
            assert client.get("/readyz").json() == {"ready": True}
            assert client.get("/v1/info").json()["sample_rate"] == 16000  # learnt from a probe at startup

            answer = client.post("/v1/generate", json={"prompt": "jazz trio", "duration": 1.0, "seed": 9})
            assert answer.status_code == 200 and answer.headers["x-seed"] == "9"
            audio, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
            assert rate == 16000 and audio.shape == (16000,)
            assert calls[-1]["PROMPT"][0] == b"jazz trio" and calls[-1]["SEED"][0] == 9
            assert calls[-1]["DURATION"][0] == 1.0 and calls[-1]["TOP_K"].dtype == np.int32

            with client.websocket_connect("/v1/stream") as ws:
                ws.send_json({"prompt": "unseeded", "duration": 1.0})
                messages, code = ws_until_close(ws)
            header, *chunks, stats = messages
            assert code == 1000 and header["sample_rate"] == 16000 and len(chunks) == 4
            assert stats["samples"] == 16000 and stats["seed"] == int(calls[-1]["SEED"][0]) >= 0  # drawn here

            refused = client.post("/v1/generate", json={"prompt": "too long", "duration": 12.0})
            assert refused.status_code == 422 and "beyond 10 s" in refused.json()["detail"]


def test_the_remote_source_is_not_ready_when_nothing_answers():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = RemoteSource(f"http://127.0.0.1:{port}", sample_rate=16000)  # no probe at startup
    with TestClient(create_app(source)) as client:
        assert client.get("/readyz").status_code == 503
        answer = client.post("/v1/generate", json={"prompt": "x", "duration": 1.0})
        assert answer.status_code == 502 and "unreachable" in answer.json()["detail"]
