# The two commands the README promises: `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it; a second run reinstalls
# only when pyproject.toml, constraints.txt or this Makefile changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.musicops-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# This machine's pip configuration names index folders that may be absent; pip warns per package.
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location" || true; }
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install triton-env demo serve test test-slow lint bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@# pyaudio (a dependency of tinysoundfont) compiles against PortAudio's headers.
	@# chromium: the web page's browser test drives it through Playwright (no browser download).
	@dpkg -s portaudio19-dev chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq portaudio19-dev chromium >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing torch 2.13.0 (CPU) and the project into $(VENV) ..."
	@# torch first, alone: with torch already present nothing else can pull a CUDA build.
	@$(PIP) install torch==2.13.0 $(QUIET_PIP)
	@$(PIP) install -c constraints.txt -e '.[dev]' $(QUIET_PIP)
	@# Reference Frechet distances for the tests. Their declared dependencies (torchaudio, encodec,
	@# numpy<2) cannot install beside this stack; the tests read only their numpy functions.
	@$(PIP) install --no-deps fadtk==1.1.0 frechet-audio-distance==0.3.4 $(QUIET_PIP)
	@# musicnn's pretrained tagger checkpoints (model/musicnn.py ports them to torch; evaluation's "musicnn"
	@# embedder). It declares tensorflow>=1.14 and numpy<1.17, which cannot install beside this stack, and
	@# only its checkpoint files and tag list are read, never its TensorFlow code.
	@$(PIP) install --no-deps musicnn==0.1.0 $(QUIET_PIP)
	@# basic-pitch's note transcriber (model/transcription.py) runs its wheel's ONNX model on onnxruntime. The wheel
	@# declares tensorflow<2.15.1 (numpy<2, protobuf<5), which cannot install here; its other dependencies are ours.
	@$(PIP) install --no-deps basic-pitch==0.4.0 $(QUIET_PIP)
	@touch $(STAMP)

# A real Triton server (the one inside nvidia-pytriton's wheel: CPU, Python backend) for
# tests/serving/test_triton_server.py. It needs numpy<2, so it gets its own environment with what the
# repository's models import (serving/triton/server.py says how the server is started).
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.musicops-installed
TRITON_PIP := $(TRITON_VENV)/bin/python -m pip --disable-pip-version-check -q

triton-env: $(TRITON_STAMP)

$(TRITON_STAMP): constraints.txt Makefile
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	@echo "installing a Triton server (nvidia-pytriton 0.7.0) into $(TRITON_VENV) ..."
	@$(TRITON_PIP) install torch==2.13.0 $(QUIET_PIP)
	@grep -E '^(transformers|tokenizers|safetensors|onnxruntime|huggingface-hub)==' constraints.txt > $(TRITON_VENV)/pins.txt
	@$(TRITON_PIP) install -c $(TRITON_VENV)/pins.txt 'numpy<2' nvidia-pytriton==0.7.0 transformers tokenizers safetensors onnxruntime $(QUIET_PIP)
	@touch $(TRITON_STAMP)

demo: install
	@$(BIN)/musicops demo

# The web page and streaming API on http://127.0.0.1:8000/, the KServe predictor on :8080 (gRPC :8081).
serve: install
	@$(BIN)/musicops serve

test: install triton-env
	@$(BIN)/ruff check .
	@$(BIN)/lint-imports
	@$(BIN)/pytest -m "not slow" --durations=10

test-slow: install
	@$(BIN)/pytest -m slow

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/lint-imports && $(BIN)/ruff format --check .

bench: install
	@$(BIN)/python benchmarks/generate.py
	@$(BIN)/python benchmarks/data.py
	@# needs a trained model: run `make demo` first (its export, artifacts/onnx, is reused)
	@$(BIN)/python benchmarks/export.py --model artifacts/model --onnx artifacts/onnx

# Re-resolve the pinned versions (run after changing dependencies in pyproject.toml).
lock: install
	@$(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|fadtk|frechet[-_]audio[-_]distance|musicnn|basic[-_]pitch)==' > constraints.txt

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .ruff_cache
