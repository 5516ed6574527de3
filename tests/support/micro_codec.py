"""The codec stage's CLI on a micro codec of the tiny preset's layout, as a killable subprocess runs it:

python -m tests.support.micro_codec --params P --corpus C --out O [--no-resume]

params.yaml names the codec preset "micro": this process registers it. One thread, so a resumed run and an
unbroken one add their floats up in the same order.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from model import presets

_TINY = presets.get_preset("tiny")
MICRO_CODEC = replace(_TINY, name="micro", codec=replace(_TINY.codec, num_filters=4, hidden_size=16, codebook_size=32))

if __name__ == "__main__":
    from components.train_codec import app

    torch.set_num_threads(1)
    presets.PRESETS["micro"] = MICRO_CODEC
    app()
