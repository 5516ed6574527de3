"""The front's WebSocket protocol (`WS /v1/stream`): one generation per connection, audio as it is made.

    client: {"type": "generate", "prompt": "...", "duration": 4, ...}   (the POST body's fields; type optional)
    server: {"type": "header", "sample_rate": 32000, "channels": 1, "format": "pcm16"}
    server: binary messages, 16-bit little-endian mono PCM, one per chunk the model makes
    server: {"type": "stats", "seed", "first_chunk_ms", "generation_ms", "real_time_factor", "samples", ...}
    close 1000

While audio flows the client may send {"type": "cancel"} (answered with stats whose `cancelled` is true, then
close 1000) or simply close: either frees the generation at once. Problems end with {"type": "error", "status",
"message", ["field"]} and a close code:

    1003 unsupported data: not a JSON text message, not an object, an unknown "type"       (status 400)
    1008 policy violation: a field out of range, named in "field" (status 422); no or a wrong API key (401)
    1011 internal error: the model or the remote server failed                             (status 500/502)
    1013 try again later: every slot and the queue are full (429), or the server is stopping (503)
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress
from typing import Any

from fastapi import WebSocket
from pydantic import ValidationError

from serving.front.admission import Lease
from serving.front.run import Run
from serving.front.state import Front
from serving.wire import pcm16

ROUTE = "/v1/stream"
# RFC 6455, section 7.4.1; 1005 is what a close without a code reads as.
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_NO_STATUS = 1000, 1003, 1005
CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1008, 1011, 1013
# The close code for each HTTP status Front.problem gives (the table in this module's docstring); others: 1011.
CLOSE_FOR_STATUS = {429: CLOSE_TRY_LATER, 503: CLOSE_TRY_LATER, 422: CLOSE_POLICY}


async def serve_socket(websocket: WebSocket, front: Front) -> None:
    """Run one connection to its end and count it by close code."""
    started = time.perf_counter()
    await websocket.accept()
    code = await _converse(websocket, front)
    front.metrics.requests.labels(ROUTE, str(code)).inc()
    front.metrics.latency.labels(ROUTE).observe(time.perf_counter() - started)


async def _converse(websocket: WebSocket, front: Front) -> int:
    """The connection's close code, whoever closed it."""
    authorization = websocket.headers.get("authorization", "")
    bearer = authorization[7:] if authorization.lower().startswith("bearer ") else None
    if not front.key_ok(bearer, websocket.headers.get("x-api-key"), websocket.query_params.get("api_key")):
        return await _close(websocket, CLOSE_POLICY, {"status": 401, "message": "a valid API key is needed"})
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return message.get("code", CLOSE_NO_STATUS)
    data, problem = _parse(message)
    kind = data.pop("type", "generate")
    if problem or kind not in ("generate", "cancel"):
        problem = problem or f'unknown message type {kind!r}: send {{"type": "generate", "prompt": ...}}'
        return await _close(websocket, CLOSE_UNSUPPORTED, {"status": 400, "message": problem})
    if kind == "cancel":  # nothing runs yet, so nothing to cancel
        return await _close(websocket, CLOSE_NORMAL)
    try:
        request = front.request_model.model_validate(data)
    except ValidationError as error:
        errors = [{"field": ".".join(map(str, e["loc"])) or "request", "message": e["msg"]} for e in error.errors()]
        first = errors[0]
        detail = {"status": 422, "message": f"{first['field']}: {first['message']}", "field": first["field"]}
        return await _close(websocket, CLOSE_POLICY, {**detail, "errors": errors})

    run = Run(ROUTE, request, front.source.sample_rate)
    leases: list[Lease] = []
    pump = asyncio.create_task(_pump(websocket, front, run, leases))
    listen = asyncio.create_task(_listen(websocket))
    try:
        await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        if not pump.done():  # the client cancelled, left or sent nonsense: stop generating at once
            run.cancelled = True
            for lease in leases:
                lease.release()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            reason, detail = listen.result()
            if reason == "disconnect":
                return detail
            if reason == "cancel":
                return await _close(websocket, CLOSE_NORMAL, {"type": "stats", **run.stats()})
            return await _close(websocket, CLOSE_UNSUPPORTED, {"status": 400, "message": detail})
        listen.cancel()
        await asyncio.gather(listen, return_exceptions=True)
        if error := pump.exception():
            status, text = front.problem(error)
            return await _close(
                websocket, CLOSE_FOR_STATUS.get(status, CLOSE_ERROR), {"status": status, "message": text}
            )
        return await _close(websocket, CLOSE_NORMAL, {"type": "stats", **run.stats()})
    finally:
        for task in (pump, listen):
            task.cancel()
        for lease in leases:
            lease.release()
        front.finish(run)


async def _pump(websocket: WebSocket, front: Front, run: Run, leases: list[Lease]) -> None:
    """Wait for a slot, then send the header and every chunk as it comes."""
    leases.append(await front.admit(run))
    header = {"type": "header", "sample_rate": run.sample_rate, "channels": 1, "format": "pcm16"}
    await websocket.send_json(header)
    async for chunk in run.stream:
        run.add(chunk)
        await websocket.send_bytes(pcm16(chunk))


async def _listen(websocket: WebSocket) -> tuple[str, Any]:
    """Why the client interrupts: ("cancel", None), ("disconnect", its close code) or ("malformed", why)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return "disconnect", message.get("code", CLOSE_NO_STATUS)
    data, problem = _parse(message)
    if problem or data.get("type") != "cancel":
        return "malformed", problem or 'while audio streams, only {"type": "cancel"} is understood'
    return "cancel", None


def _parse(message: dict) -> tuple[dict, str | None]:
    """A WebSocket message as a JSON object, or why it is not one."""
    if message.get("text") is None:
        return {}, "send the request as a JSON text message, not a binary one"
    try:
        data = json.loads(message["text"])
    except json.JSONDecodeError as error:
        return {}, f"not JSON: {error}"
    if not isinstance(data, dict):
        return {}, "send a JSON object"
    return data, None


async def _close(websocket: WebSocket, code: int, message: dict[str, Any] | None = None) -> int:
    """Send a last JSON message (an error unless it has a type) and close with `code`, which it returns."""
    with suppress(Exception):  # the client may be gone already; there is nobody left to tell
        if message is not None:
            await websocket.send_json(message if "type" in message else {"type": "error", **message})
        await websocket.close(code)
    return code
