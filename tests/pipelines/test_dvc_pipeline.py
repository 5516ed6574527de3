"""`dvc repro` for real, in a temporary copy of the repository, on tiny parameters: the whole pipeline
runs in order from corpus to trained model, a parameter change re-runs only what depends on it,
`dvc push` / `dvc pull` round-trip through a local remote, and a drift check retrains on new data by
fine-tuning the promoted model."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from model.checkpoint import CARD_FILE
from settings import paths
from settings.data_sources import source_digests
from tests.support import REPO
from tests.support.audio_folder import audio_folder
from tests.support.micro_pipeline import MICRO_PARAMS
from tests.support.traffic import traffic, write_log

pytestmark = pytest.mark.integration

STAGES = ("prepare", "validate", "augment", "train_codec", "tokenize", "train", "evaluate", "export", "triton")


def _run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in changes.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (tracked or not, as git sees them) in a fresh git repository."""
    copy = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    _set_params(copy, MICRO_PARAMS)
    _run(copy, "git", "init", "-q")
    _run(copy, "git", "add", "-A")
    _run(copy, "git", "commit", "-qm", "copy")
    _run(copy, sys.executable, "-m", "dvc", "remote", "modify", "local", "url", str(copy.parent / "remote"))
    return copy


def test_repro_runs_every_stage_in_order(repo):
    output = _run(repo, sys.executable, "-m", "dvc", "repro")
    order = [output.index(f"Running stage '{stage}'") for stage in STAGES]
    assert order == sorted(order)
    assert (repo / "artifacts/data/corpus/manifest.jsonl").is_file()
    assert (repo / "artifacts/data/validation/data_docs/index.html").is_file()
    assert (repo / "artifacts/data/augmented/manifest.jsonl").is_file()
    assert (repo / "artifacts/codec/config.json").is_file()
    assert (repo / "artifacts/tokens/codes.npy").is_file()
    assert (repo / "artifacts/model/musicops.json").is_file()
    assert (repo / "artifacts/evaluation/report.html").is_file()
    assert (repo / "artifacts/onnx/decoder_with_past_model.onnx").is_file()
    assert (repo / "artifacts/triton/musicgen/config.pbtxt").is_file()
    metrics = _run(repo, sys.executable, "-m", "dvc", "metrics", "show")
    assert "best_valid_loss" in metrics and "unigram_loss" in metrics and "fad.mel.model" in metrics
    assert "didn't change" in _run(repo, sys.executable, "-m", "dvc", "repro")  # nothing to redo


def test_a_parameter_change_reruns_only_the_stages_that_read_it(repo):
    _run(repo, sys.executable, "-m", "dvc", "repro")
    _set_params(repo, {"evaluate": {"report_samples": 2}})
    output = _run(repo, sys.executable, "-m", "dvc", "repro")
    rerun = [stage for stage in STAGES if f"Running stage '{stage}'" in output]
    assert rerun == ["evaluate"]  # export and triton read the model, not the evaluation


def test_push_and_pull_through_the_local_remote(repo):
    _run(repo, sys.executable, "-m", "dvc", "repro")
    manifest = (repo / "artifacts/data/corpus/manifest.jsonl").read_bytes()
    _run(repo, sys.executable, "-m", "dvc", "push")
    shutil.rmtree(repo / "artifacts")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(repo, sys.executable, "-m", "dvc", "pull")
    assert (repo / "artifacts/data/corpus/manifest.jsonl").read_bytes() == manifest
    # everything cached comes back; the trainer's checkpoints and logs are not cached (cache: false)
    assert "up to date" in _run(repo, sys.executable, "-m", "dvc", "status", "--with-deps", "tokenize")
    assert (repo / "artifacts/model/model.safetensors").is_file()


def test_a_drift_retrains_only_on_new_data_by_fine_tuning_the_promoted_model(repo):
    """The loop for real, no injected launcher: drift with no new data starts nothing; `musicops data add`, and
    the next check starts `dvc exp run -S train.init_from=promoted`, which trains on the new source from the
    promoted model's weights."""
    _run(repo, sys.executable, "-m", "dvc", "repro")
    _run(repo, sys.executable, "-m", "musicops.cli", "promote", "--force")  # the micro model: whatever its gate said
    now = datetime.now(UTC)
    write_log(traffic(40, seed=3, shift=["genres"], end=now, span=timedelta(minutes=10)), repo / paths.REQUEST_LOG)

    quiet = _check(repo)
    assert quiet.returncode == 1 and "retraining no new data" in quiet.stdout, quiet.stdout + quiet.stderr
    assert "musicops data add FOLDER --captions FILE" in quiet.stdout

    audio_folder(repo.parent / "polka-takes", files=3, seconds=1.0, word="polka", table="captions.csv")
    _run(repo, sys.executable, "-m", "musicops.cli", "data", "add", str(repo.parent / "polka-takes"), "--name", "polka")
    started = _check(repo)
    assert started.returncode == 1, started.stdout + started.stderr
    assert "retraining started (dvc exp run -S train.init_from=promoted (pid" in started.stdout, started.stdout
    assert "on new data: polka)" in started.stdout
    pid = int(re.search(r"\(pid (\d+),", started.stdout).group(1))
    deadline = time.monotonic() + 600
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:  # it runs in the background
        time.sleep(2)
    log = (repo / paths.MONITORING / "retrain.log").read_text()
    assert "Running stage 'train'" in log and "ERROR" not in log, log[-3000:]
    card = json.loads((repo / paths.MODEL / CARD_FILE).read_text())
    assert card["data_sources"] == source_digests(["polka"], repo / paths.DATA_SOURCES)
    meta = json.loads((repo / paths.TRAIN / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["start"]["directory"] == str(paths.PROMOTED / "model")
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["init_from"] == "promoted"  # the experiment's


def _check(repo: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "musicops.cli", "monitor", "check", "--no-dashboard"]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=600)
