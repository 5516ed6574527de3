"""`musicops serve` as a user runs it (the page, the front's API and the KServe predictor up together, both
gone after SIGTERM), and the front's remote source against the real predictor."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from model.generation_params import GenerationParams
from monitoring.request_log import read_log
from serving.launch import free_port, start_predictor
from serving.sources import RemoteSource

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def _wait_for_line(process: subprocess.Popen, prefix: str, timeout_s: float = 180) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip())
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no {prefix!r} line; output so far:\n" + "\n".join(lines))


def test_musicops_serve_starts_page_front_and_predictor_and_stops_both(micro_dir, tmp_path):
    ports = [free_port() for _ in range(3)]
    command = [sys.executable, "-m", "musicops.cli", "serve", "--model", str(micro_dir), "--port", str(ports[0])]
    command += ["--predictor-port", str(ports[1]), "--grpc-port", str(ports[2]), "--log-dir", str(tmp_path / "log")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _wait_for_line(process, "Ctrl-C")
        assert f"page       http://127.0.0.1:{ports[0]}/" in lines
        assert "<title>" in httpx.get(f"http://127.0.0.1:{ports[0]}/").text
        wav = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/generate", json={"prompt": "x", "duration": 0.3}, timeout=60)
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        metadata = httpx.get(f"http://127.0.0.1:{ports[1]}/v2/models/musicgen").json()
        assert [tensor["name"] for tensor in metadata["outputs"]][:2] == ["AUDIO", "SAMPLE_RATE"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0
    for port in ports[:2]:  # nothing listens any more
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    logged = read_log(tmp_path / "log")  # the request went to monitoring's log, flushed on the way out
    assert list(logged["prompt"]) == ["x"] and logged["route"].iloc[0] == "/v1/generate"


def test_the_remote_source_streams_what_the_real_predictor_generates(micro_dir):
    async def body(url: str):
        source = RemoteSource(url)
        await source.start()
        try:
            params = GenerationParams(duration=0.5, seed=4)
            stream = await source.stream("remote prompt", params)
            chunks = [chunk async for chunk in stream]
            again = [chunk async for chunk in await source.stream("remote prompt", params)]
            return source.sample_rate, np.concatenate(chunks), np.concatenate(again), len(chunks)
        finally:
            await source.close()

    with start_predictor(micro_dir) as (http_url, _):
        sample_rate, audio, again, count = asyncio.run(body(http_url))
    assert audio.shape == (round(0.5 * sample_rate),) and count >= 1
    np.testing.assert_array_equal(audio, again)  # the seed travels to the predictor
