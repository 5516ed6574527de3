"""The Triton runtime: what runs inside a Triton server and what talks to one.

    musicgen_model.py  the `musicgen` Python-backend model: the generation loop, calling the ONNX models over BLS
    onnx_standin.py    a Python-backend model running its model.onnx in ONNX Runtime, for the Triton that runs on
                       this machine (it has no onnxruntime backend)
    server.py          a real Triton server (nvidia-pytriton's) on 127.0.0.1, for tests and local trials
    client_runner.py   TritonClientRunner: the ONNX generator's graphs run in a remote Triton

The first two are files, not imports: components/triton_repository.py copies musicgen_model.py into a repository as
musicgen/1/model.py, and server.py copies onnx_standin.py in as each ONNX model's model.py. This file imports nothing.
"""
