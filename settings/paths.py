"""Where the pipeline's artifacts live, relative to the repository root: dvc.yaml's outs and every CLI default.

tests/settings/test_paths.py checks that dvc.yaml writes exactly these folders.
"""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path("artifacts")

CORPUS = ARTIFACTS / "data" / "corpus"  # prepare: the clips, captions and manifest
VALIDATION = ARTIFACTS / "data" / "validation"  # validate: Great Expectations' results
AUGMENTED = ARTIFACTS / "data" / "augmented"  # augment: copies of the training split
CODEC = ARTIFACTS / "codec"  # train_codec
TOKENS = ARTIFACTS / "tokens"  # tokenize
TRAIN = ARTIFACTS / "train"  # train: checkpoints (last, best) and dvclive logs
MODEL = ARTIFACTS / "model"  # train: the model directory everything downstream loads
EVALUATION = ARTIFACTS / "evaluation"  # evaluate: metrics, decision, report
ONNX = ARTIFACTS / "onnx"  # export
TRITON = ARTIFACTS / "triton"  # triton: the model repository
PROMOTED = ARTIFACTS / "promoted"  # `musicops promote`: the model serving and the gate compare against
HOLDOUT = ARTIFACTS / "data" / "holdout"  # `musicops evaluate --final`: the split development never reads
FINAL_EVALUATION = ARTIFACTS / "evaluation-final"  # `musicops evaluate --final`: its metrics and report

MONITORING = ARTIFACTS / "monitoring"
REQUEST_LOG = MONITORING / "requests"  # the front's Parquet request log
MONITOR_REFERENCE = MONITORING / "reference"  # the drift reference built from the evaluation
MONITOR_WORKSPACE = MONITORING / "workspace"  # the Evidently workspace the dashboard shows
MONITOR_REPORT = MONITORING / "report"  # `musicops monitor report`'s HTML

PIPELINE_ROOT = ARTIFACTS / "pipeline"  # kfp.local runs, one folder per run
DEMO = ARTIFACTS / "demo"  # `musicops demo`'s loss plot

# The user's own data: one folder of audio and captions per source (`musicops data add` puts it there, DVC-tracked),
# read by the prepare stage beside the main corpus when params.yaml's data.sources names it.
DATA_SOURCES = Path("data/sources")

# The project's base model (a MusicGen directory, ours or facebook/musicgen-small's layout) that
# `train.init_from: base` fine-tunes; the user puts it there, nothing in the pipeline writes it.
BASE_MODEL = Path("models/base")

PARAMS = Path("params.yaml")  # the params document every stage and command reads by default
