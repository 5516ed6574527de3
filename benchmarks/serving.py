"""Serving latency and throughput through the real front: WebSocket streams at several concurrencies, and
requests per second for short non-streamed clips.

For each concurrency N, N clients open WebSocket streams at once (repeated `--rounds` times) and measure,
from sending the request: the first binary audio chunk (first-chunk latency) and the final message (each
stream's real-time factor = seconds of audio / seconds from request to last chunk). Then `--requests`
POST /v1/generate calls of `--short` seconds each, `--clients` at a time, give requests per second.

    python benchmarks/serving.py --model artifacts/model --concurrency 1 --concurrency 4 --concurrency 8

The front runs as a subprocess (`python -m serving.front`) on 127.0.0.1 with the in-process engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx
import websockets

PROMPT = "a laid-back jazz tune at 92 BPM with saxophone, walking bass and brushed drums"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_front(model: str, backend: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "serving.front", "--model", model, "--backend", backend, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the front exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("the front did not become ready in 120 s")


async def one_stream(url: str, duration: float) -> tuple[float, float]:
    """(first-chunk latency, real-time factor) of one WebSocket stream, both from the client's clock."""
    async with websockets.connect(url, max_size=None) as socket_:
        started = time.perf_counter()
        await socket_.send(json.dumps({"type": "generate", "prompt": PROMPT, "duration": duration}))
        first = None
        samples, sample_rate = 0, None
        async for message in socket_:
            if isinstance(message, bytes):
                first = first or time.perf_counter() - started
                samples += len(message) // 2
                continue
            event = json.loads(message)
            if event.get("type") == "header":
                sample_rate = event["sample_rate"]
            elif event.get("type") == "stats":
                break
            elif event.get("type") == "error":
                raise RuntimeError(event)
        elapsed = time.perf_counter() - started
    return first, samples / sample_rate / elapsed


async def streams(base: str, concurrency: int, rounds: int, duration: float) -> dict[str, float]:
    firsts, factors = [], []
    for _ in range(rounds):
        results = await asyncio.gather(*(one_stream(f"{base}/v1/stream", duration) for _ in range(concurrency)))
        firsts += [first for first, _ in results]
        factors += [factor for _, factor in results]
    firsts.sort()
    return {
        "first_p50_ms": 1000 * statistics.median(firsts),
        "first_p95_ms": 1000 * firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))],
        "rtf_min": min(factors),
        "rtf_median": statistics.median(factors),
    }


async def short_requests(base: str, requests: int, clients: int, duration: float) -> float:
    """Requests per second for `requests` POST /v1/generate calls, `clients` in flight at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            await queue.get()
            response = await http.post(f"{base}/v1/generate", json={"prompt": PROMPT, "duration": duration})
            response.raise_for_status()

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="artifacts/model", help="a model directory, export or preset name")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--concurrency", type=int, action="append", help="streams at once (repeatable); 1 4 8")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each concurrency")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio per stream")
    parser.add_argument("--requests", type=int, default=16, help="non-streamed requests for requests/s")
    parser.add_argument("--clients", type=int, default=4, help="non-streamed requests in flight at a time")
    parser.add_argument("--short", type=float, default=1.0, help="seconds of audio per non-streamed request")
    args = parser.parse_args()
    model = args.model

    port = free_port()
    front = start_front(model, args.backend, port)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(one_stream(f"ws://127.0.0.1:{port}/v1/stream", 1.0))  # warm-up
        print(f"model {model} ({args.backend}), {args.duration:g} s per stream, {args.rounds} rounds")
        print("| streams | first chunk p50 | first chunk p95 | RTF per stream (min / median) |")
        print("|---|---|---|---|")
        for concurrency in args.concurrency or [1, 4, 8]:
            row = asyncio.run(streams(f"ws://127.0.0.1:{port}", concurrency, args.rounds, args.duration))
            print(
                f"| {concurrency} | {row['first_p50_ms']:.0f} ms | {row['first_p95_ms']:.0f} ms | "
                f"{row['rtf_min']:.2f}x / {row['rtf_median']:.2f}x |"
            )
        rate = asyncio.run(short_requests(base, args.requests, args.clients, args.short))
        print(f"non-streamed {args.short:g} s clips, {args.clients} in flight: {rate:.2f} requests/s")
    finally:
        front.terminate()
        front.wait(30)


if __name__ == "__main__":
    main()
