"""Traffic for tests and demos: send generation requests to a running front, so its request log fills with real
rows (real audio, real timing) rather than hand-made ones.

    logger = RequestLogger.from_reference("artifacts/monitoring/requests", "artifacts/monitoring/reference", model)
    with serve_in_thread(create_app(LocalSource(model), FrontSettings(request_log=logger))) as url:
        drive_front(url, ["calm piano in D minor", "fast techno at 140 BPM"], count=20, duration=2.0)
    logger.close()

`target` is the front's base URL or any httpx.Client pointing at it (fastapi.testclient.TestClient is one, so an
app runs in-process with no server).
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx


def drive_front(
    target: str | httpx.Client,
    prompts: list[str],
    count: int | None = None,
    duration: float = 1.0,
    seed: int | None = 0,
    api_key: str | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """POST /v1/generate `count` times (default: once per prompt), cycling through `prompts`, each with
    `duration` and the seed `seed + i` (None: the server draws one) plus any other request field in `params`
    (guidance, temperature, top_k, top_p). Returns per request {prompt, status, seed}; a refused request (429,
    422...) is returned too, not raised, since overload is part of realistic traffic."""
    if not prompts:
        raise ValueError("drive_front needs at least one prompt")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=target, timeout=600.0) if isinstance(target, str) else target
    results = []
    try:
        for i, prompt in enumerate(itertools.islice(itertools.cycle(prompts), count or len(prompts))):
            body = {"prompt": prompt, "duration": duration, **params}
            if seed is not None:
                body["seed"] = seed + i
            answer = client.post("/v1/generate", json=body, headers=headers)
            served = answer.headers.get("x-seed")
            results.append({"prompt": prompt, "status": answer.status_code, "seed": int(served) if served else None})
    finally:
        if isinstance(target, str):
            client.close()
    return results
