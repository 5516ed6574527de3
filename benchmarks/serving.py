"""Serving latency and throughput through the real front: WebSocket streams at several concurrencies, and
requests per second for short non-streamed clips.

For each concurrency N, N clients open WebSocket streams at once (repeated `--rounds` times) and measure,
from sending the request: the first binary audio chunk (first-chunk latency) and the final message (each
stream's real-time factor = seconds of audio / seconds from request to last chunk). Then `--requests`
POST /v1/generate calls of `--short` seconds each, `--clients` at a time, give requests per second.

    python benchmarks/serving.py --model artifacts/model --concurrency 1 --concurrency 4 --concurrency 8

`--staggered N` adds a run where N streams arrive `--stagger-s` apart (each one while the earlier ones
decode), through this front and through a second one started with `--no-join`, side by side: what
letting requests join a running batch buys a late arrival's first chunk.

`--seeded` gives every request its own seed (1, 2, 3, ... across the run), as clients that want reproducible
clips send: seeded requests share batches as unseeded ones do (docs/serving.md#seeds-and-batching), and this
measures that they cost the same.

The fronts run as subprocesses (`python -m serving.front`) on 127.0.0.1 with the in-process engine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx
import websockets

from settings import paths

PROMPT = "a laid-back jazz tune at 92 BPM with saxophone, walking bass and brushed drums"
_SEEDS = itertools.count(1)  # --seeded: every request of the run its own seed


def request_body(duration: float, seeded: bool) -> dict:
    """A generation request's JSON body: the prompt, its duration, and with `seeded` a seed no other request has."""
    return {"prompt": PROMPT, "duration": duration, **({"seed": next(_SEEDS)} if seeded else {})}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_front(model: str, backend: str, port: int, join: bool = True) -> subprocess.Popen:
    command = [sys.executable, "-m", "serving.front", "--model", model, "--backend", backend, "--port", str(port)]
    command += [] if join else ["--no-join"]
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


async def one_stream(url: str, duration: float, seeded: bool = False) -> tuple[float, float]:
    """(first-chunk latency, real-time factor) of one WebSocket stream, both from the client's clock."""
    async with websockets.connect(url, max_size=None) as socket_:
        started = time.perf_counter()
        await socket_.send(json.dumps({"type": "generate", **request_body(duration, seeded)}))
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


async def later(delay: float, url: str, duration: float, seeded: bool) -> tuple[float, float]:
    await asyncio.sleep(delay)
    return await one_stream(url, duration, seeded)


async def stream_round(
    base: str, concurrency: int, duration: float, stagger: float = 0.0, seeded: bool = False
) -> list[tuple[float, float]]:
    """(first-chunk latency, real-time factor) of `concurrency` streams started `stagger` s apart."""
    url = f"{base}/v1/stream"
    return list(await asyncio.gather(*(later(i * stagger, url, duration, seeded) for i in range(concurrency))))


def summary(results: list[tuple[float, float]]) -> str:
    """A table row's cells: first chunk p50 and p95, RTF per stream min / median."""
    firsts = sorted(first for first, _ in results)
    factors = [factor for _, factor in results]
    p95 = firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))]
    return (
        f"{1000 * statistics.median(firsts):.0f} ms | {1000 * p95:.0f} ms | "
        f"{min(factors):.2f}x / {statistics.median(factors):.2f}x"
    )


async def short_requests(base: str, requests: int, clients: int, duration: float, seeded: bool = False) -> float:
    """Requests per second for `requests` POST /v1/generate calls, `clients` in flight at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            await queue.get()
            response = await http.post(f"{base}/v1/generate", json=request_body(duration, seeded))
            response.raise_for_status()

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(paths.MODEL), help="a model directory, export or preset name")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--concurrency", type=int, action="append", help="streams at once (repeatable); 1 4 8")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each concurrency")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio per stream")
    parser.add_argument("--requests", type=int, default=16, help="non-streamed requests for requests/s")
    parser.add_argument("--clients", type=int, default=4, help="non-streamed requests in flight at a time")
    parser.add_argument("--short", type=float, default=1.0, help="seconds of audio per non-streamed request")
    parser.add_argument("--staggered", type=int, default=0, help="streams arriving one by one (0: skip)")
    parser.add_argument("--stagger-s", type=float, default=0.5, help="seconds between staggered arrivals")
    parser.add_argument("--seeded", action="store_true", help="every request its own seed (default: none)")
    args = parser.parse_args()
    model = args.model

    port = free_port()
    front = start_front(model, args.backend, port)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(one_stream(f"ws://127.0.0.1:{port}/v1/stream", 1.0))  # warm-up
        seeds = "each request its own seed" if args.seeded else "unseeded"
        print(f"model {model} ({args.backend}), {args.duration:g} s per stream, {args.rounds} rounds, {seeds}")
        print("| streams | first chunk p50 | first chunk p95 | RTF per stream (min / median) |")
        print("|---|---|---|---|")
        for concurrency in args.concurrency or [1, 4, 8]:
            results = []
            for _ in range(args.rounds):
                results += asyncio.run(
                    stream_round(f"ws://127.0.0.1:{port}", concurrency, args.duration, seeded=args.seeded)
                )
            print(f"| {concurrency} | {summary(results)} |")
        rate = asyncio.run(short_requests(base, args.requests, args.clients, args.short, args.seeded))
        print(f"non-streamed {args.short:g} s clips, {args.clients} in flight: {rate:.2f} requests/s")
        if args.staggered:
            staggered(args, f"ws://127.0.0.1:{port}")
    finally:
        front.terminate()
        front.wait(30)


def staggered(args: argparse.Namespace, joining_base: str) -> None:
    """The staggered run through the joining front and a `--no-join` one, alternating rounds."""
    port = free_port()
    front = start_front(args.model, args.backend, port, join=False)
    bases = {"yes": joining_base, "no": f"ws://127.0.0.1:{port}"}
    try:
        asyncio.run(one_stream(f"{bases['no']}/v1/stream", 1.0))  # warm-up
        results: dict[str, list[tuple[float, float]]] = {"yes": [], "no": []}
        for _ in range(args.rounds):  # alternate, so load from elsewhere hits both alike
            for mode, base in bases.items():
                results[mode] += asyncio.run(
                    stream_round(base, args.staggered, args.duration, args.stagger_s, args.seeded)
                )
        print(f"\n{args.staggered} streams arriving {args.stagger_s:g} s apart, {args.rounds} rounds")
        print("| joins running batch | first chunk p50 | p95 | RTF per stream (min / median) |")
        print("|---|---|---|---|")
        for mode, rows in results.items():
            print(f"| {mode} | {summary(rows)} |")
    finally:
        front.terminate()
        front.wait(30)


if __name__ == "__main__":
    main()
