"""The KServe predictor: a `kserve.Model` serving a MusicGen model through a GenerationEngine, V1 and V2.

    python -m serving.predictor --model_dir=artifacts/model [--backend=auto|torch|onnx] [--host=127.0.0.1] ...

    protocol.py   V1 instances and V2 tensors parsed and checked (400s that name the field)
    musicgen.py   MusicGenModel: the kserve.Model answering V1 (whole clips or an SSE stream) and V2
    server.py     PredictorServer, BoundGRPCServer, main: the kserve-version-specific start, bound to one host

This file imports nothing, so `serving.predictor.protocol` can be used without starting anything.
"""
