"""Run the trainer on the micro preset from the command line, as torchrun or a killable subprocess would:

python -m tests.support.micro_train TOKENS CODEC OUT MODEL '{"steps": 8, ...}' [--resume]

`start_training`, `finish` and `trained_weights` start such a run from a test, wait for it and read its weights.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from components.train import train
from components.training.state import STATE_FILE
from settings.params import TrainParams
from tests.conftest import MICRO
from tests.support import REPO


def start_training(tokens, out: Path, overrides: dict, *extra: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """This module as a subprocess training the micro preset on `tokens` (codec, token folder) into `out`."""
    codec, token_dir = tokens
    command = [
        *launcher,
        "-m",
        "tests.support.micro_train",
        str(token_dir),
        str(codec),
        str(out / "train"),
        str(out / "model"),
        json.dumps(overrides),
        *extra,
    ]
    if not launcher:
        command.insert(0, sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> None:
    """Wait for a training subprocess; its output is the assertion message when it failed."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output


def trained_weights(out: Path, which: str = "last") -> dict[str, torch.Tensor]:
    """The trained tensors of checkpoint `which` (last or best) of a run into `out`."""
    return torch.load(out / "train" / "checkpoints" / which / STATE_FILE, weights_only=True)["objective"]


def killed_and_straight(tokens, runs: Path, overrides: dict) -> tuple[dict, dict]:
    """Train once straight through and once killed with SIGKILL mid-way (after step 4's checkpoint) and resumed;
    the two runs' trained tensors, for the caller to compare (folders `runs/straight` and `runs/killed`)."""
    finish(start_training(tokens, runs / "straight", overrides))
    # --hold: the run waits after its step-4 checkpoint, so a busy machine cannot let it finish before the kill.
    killed = start_training(tokens, runs / "killed", overrides, "--hold")
    meta = runs / "killed" / "train" / "checkpoints" / "last" / "meta.json"
    deadline = time.time() + 300
    while not (meta.is_file() and json.loads(meta.read_text())["step"] >= 4) and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stopped_at = json.loads(meta.read_text())["step"]
    assert 4 <= stopped_at < overrides["steps"], "the run must be killed mid-way"
    finish(start_training(tokens, runs / "killed", overrides, "--resume"))
    return trained_weights(runs / "straight"), trained_weights(runs / "killed")


def _hold_after_step_four() -> None:
    """Make the training wait (for the test's SIGKILL) once its last checkpoint is at step 4 or later."""
    import components.train as training

    save = training.save_checkpoint

    def save_then_hold(folder, state, meta):
        save(folder, state, meta)
        if folder.name == "last" and meta["step"] >= 4:
            time.sleep(600)

    training.save_checkpoint = save_then_hold


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "--hold" in sys.argv:
        _hold_after_step_four()
    tokens, codec, out, model, overrides = sys.argv[1:6]
    params = TrainParams(**json.loads(overrides))
    train(
        Path(tokens),
        Path(codec),
        Path(out),
        Path(model),
        params,
        resume="--resume" in sys.argv,
        preset=MICRO,
        show_progress=False,
    )
