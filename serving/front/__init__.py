"""The FastAPI front: REST, Server-Sent Events and WebSocket streaming, the web page, health and /metrics.

    app.py        create_app, serve_in_thread, main (`python -m serving.front`); re-exports FrontSettings and Front
    state.py      Front (what every route shares) and FrontSettings
    ws.py         the WebSocket protocol (`WS /v1/stream`)
    run.py        one generation as the front sees it (timing, stats, the request log's record)
    request.py    the request models, narrowed to a front's limits
    admission.py  bounded concurrency and queue (429 beyond them)
    metrics.py    the Prometheus metrics and their middleware
    web/          the static page served at /

Imports point one way: app -> ws -> state -> (admission, metrics, request, run). This file imports nothing, so
importing one part does not load the others.
"""
