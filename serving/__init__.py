"""Serving: the KServe predictor, the Triton runtime and the FastAPI front, over one generation engine.

    engine.py     GenerationEngine: dynamic batching, a bounded queue and cancellable audio streams
    sources.py    where the front's audio comes from: LocalSource (an engine here) or RemoteSource (a V2 endpoint)
    wire.py       PCM16, WAV, base64 and Server-Sent Events, as both servers send them
    front/        the FastAPI front: REST, SSE and WebSocket streaming, the web page, /metrics
    predictor/    the KServe predictor (V1 and V2, REST and gRPC); predictor/server.py is the kserve-specific start
    triton/       the Triton runtime: the repository's Python models, a local Triton server, a client runner
    launch.py     the predictor as a subprocess on free ports; local.py: `musicops serve`

Imports among these point one way (no cycles): front -> sources -> engine, and both servers -> wire.
"""
