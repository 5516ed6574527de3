# syntax=docker/dockerfile:1
# The musicops image: one image for every role, chosen by the command a manifest gives it.
#   predictor   python -m serving.predictor --model_dir=/mnt/models ...   (the KServe ServingRuntime)
#   front       python -m serving.front --remote URL --host 0.0.0.0 ...
#   pipeline    the Kubeflow steps (lightweight components run on this image's python3) and torchrun for training
#   monitor     musicops monitor check ...; evidently ui --workspace DIR ...
# CPU build (ghcr.io/musicops/musicops:0.1.0):
#   docker build -t ghcr.io/musicops/musicops:0.1.0 .
# CUDA build for the training jobs (tag 0.1.0-cuda): the same with torch from a CUDA index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t ghcr.io/musicops/musicops:0.1.0-cuda .

FROM python:3.11.14-slim-bookworm AS builder

# pyaudio (tinysoundfont's dependency) is built from source against PortAudio's headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev portaudio19-dev \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv

# torch first and alone, from the chosen index: with it installed nothing later can pull another build of it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0

# The dependencies at constraints.txt's versions. Empty packages stand in for the source here, so that a code change
# rebuilds only the COPY layers below, not this one. The install is editable (/app is the installed package): the
# project reads files beside its modules that a wheel would leave out (pipelines/compiled, params.yaml; the front's
# page, serving/front/web, is package data and the Triton model files in serving/triton/ are modules: both ship).
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p settings model components pipelines serving monitoring musicops \
    && touch settings/__init__.py model/__init__.py components/__init__.py pipelines/__init__.py \
        serving/__init__.py monitoring/__init__.py musicops/__init__.py \
    && pip install --no-cache-dir -c constraints.txt -e .
# musicnn's pretrained tagger checkpoints, for evaluation's "musicnn" embedder (model/musicnn.py ports them to
# torch), and basic-pitch's ONNX note transcriber (model/transcription.py). --no-deps: they declare TensorFlow
# (musicnn TensorFlow 1 and numpy<1.17), and only their model files and pre/post-processing are used.
RUN pip install --no-cache-dir --no-deps musicnn==0.1.0 basic-pitch==0.4.0

COPY settings/ settings/
COPY model/ model/
COPY components/ components/
COPY pipelines/ pipelines/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY musicops/ musicops/
COPY params.yaml ./
# The base model train.init_from: base fine-tunes (float16, ~20 MB): the pipeline's train step starts from it.
COPY models/ models/


FROM python:3.11.14-slim-bookworm

# PortAudio's runtime library, which pyaudio loads; no compiler or headers in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libportaudio2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 musicops \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/musicops \
        --shell /usr/sbin/nologin musicops

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

# Caches under HOME: pods run with a read-only root filesystem and mount emptyDirs at /tmp and /home/musicops.
# numba (under librosa) must have a writable cache directory, or its cached functions fail to import.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/musicops \
    XDG_CACHE_HOME=/home/musicops/.cache \
    HF_HOME=/home/musicops/.cache/huggingface \
    NUMBA_CACHE_DIR=/home/musicops/.cache/numba \
    MPLCONFIGDIR=/home/musicops/.cache/matplotlib \
    DO_NOT_TRACK=1

WORKDIR /app
USER 10001:10001
# front 8000, predictor HTTP 8080 and gRPC 8081
EXPOSE 8000 8080 8081
CMD ["musicops", "--help"]
