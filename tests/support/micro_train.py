"""Run the trainer on the micro preset from the command line, as torchrun or a killable subprocess would:

python -m tests.support.micro_train TOKENS CODEC OUT MODEL '{"steps": 8, ...}' [--resume]
"""

import json
import sys
from pathlib import Path

import torch

from components.train import train
from settings.params import TrainParams
from tests.conftest import MICRO

if __name__ == "__main__":
    torch.set_num_threads(1)
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
