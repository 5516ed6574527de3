"""The Triton runtime: what runs inside a Triton server and what talks to one.

musicgen_model.py  the `musicgen` Python-backend model (the generation loop over BLS); not imported here:
                   components/triton_repository.py copies the file into a repository as musicgen/1/model.py
onnx_standin.py    a Python-backend model running model.onnx in ONNX Runtime, copied in for the Triton that
                   runs on this machine (no onnxruntime backend); also a file, not an import
server.py          a real Triton server (nvidia-pytriton's) on 127.0.0.1, for tests and local trials
client_runner.py   TritonClientRunner: the ONNX generator's graphs run in a remote Triton
"""
