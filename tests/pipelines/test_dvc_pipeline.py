"""`dvc repro` for real, in a temporary copy of the repository, on tiny parameters: the whole pipeline
runs in order from corpus to trained model, a parameter change re-runs only what depends on it, and
`dvc push` / `dvc pull` round-trip through a local remote."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.micro_pipeline import MICRO_PARAMS

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
    _set_params(repo, {"augment": {"seed": 1}})
    output = _run(repo, sys.executable, "-m", "dvc", "repro")
    assert "Running stage 'augment'" in output
    assert "Running stage 'prepare'" not in output and "Running stage 'validate'" not in output
    _set_params(repo, {"train": {"learning_rate": 0.002}})
    output = _run(repo, sys.executable, "-m", "dvc", "repro")
    rerun = [stage for stage in STAGES if f"Running stage '{stage}'" in output]
    assert rerun == ["train", "evaluate", "export", "triton"]  # train, and what depends on its model


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
