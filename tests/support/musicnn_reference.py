"""The clips the musicnn port is checked on, and the script that recorded musicnn's own TensorFlow outputs for them.

tests/model/test_musicnn.py renders `CLIPS` again (rendering is deterministic) and compares model/musicnn.py
with the outputs stored in tests/fixtures/musicnn_tf_reference.npz. To record them again, with TensorFlow in
a virtualenv of its own outside the repository (it cannot install beside this project's stack):

    python3.11 -m venv /work/tf-env
    /work/tf-env/bin/pip install tensorflow-cpu tf-keras librosa==0.9.2
    /work/tf-env/bin/pip install --no-deps musicnn==0.1.0
    PYTHONPATH=$PWD .venv/bin/python tests/support/musicnn_reference.py --tf-python /work/tf-env/bin/python

This process renders the clips as 16 kHz float WAV files; the TensorFlow interpreter runs musicnn 0.1.0's own
`extractor` on them (TF_USE_LEGACY_KERAS=1 gives its `tf.compat.v1.layers` the Keras 2 they need under
TensorFlow 2.16+), with two settings changed from outside, both explained in the driver below: librosa's
spectrogram pads by reflection, as librosa 0.7-0.8 (what musicnn 0.1.0 was written against; 0.8 no longer
imports under numpy 2) did by default, and all patches go through the network in one batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "musicnn_tf_reference.npz"
SAMPLE_RATE = 16_000
SECONDS = 6.5  # two 3 s patches each
MODEL = "MSD_musicnn"

# (genre, seed, gain on the renderer's 0.9 peak). The quiet ones stay below the level where musicnn's float16
# log compression overflows; the loud one records what the extractor does above it.
CLIPS = (("rock", 11, 0.15), ("classical", 12, 0.15), ("hip hop", 13, 0.15))
LOUD_CLIP = ("electronic", 14, 1.0)

_TF_DRIVER = """
import functools, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import librosa, musicnn, numpy as np, tensorflow
from musicnn import configuration
from musicnn.extractor import extractor
# librosa 0.7 to 0.8 padded spectrogram frames by reflection; 0.9 pads with zeros, so restore the old default.
librosa.feature.melspectrogram = functools.partial(librosa.feature.melspectrogram, pad_mode="reflect")
# Every patch in the first session run: 0.1.0's loop over later batches appends the first batch's
# penultimate (and cnn1-3) features again, a stale-variable bug; batch norm at inference ignores batch size.
configuration.BATCH_SIZE = 1024
out = {}
for i, path in enumerate(sys.argv[3:]):
    taggram, tags, features = extractor(path, model=sys.argv[2], input_length=3, extract_features=True)
    out[f"taggram_{i}"] = taggram.astype(np.float32)
    out[f"penultimate_{i}"] = features["penultimate"].astype(np.float32)
out["versions"] = np.array(f"tensorflow {tensorflow.__version__}, librosa {librosa.__version__}")
np.savez(sys.argv[1], **out)
"""


def render_clip(genre: str, seed: int, gain: float) -> np.ndarray:
    """The clip's mono float32 audio at 16 kHz: the corpus's composer and renderer, scaled by `gain`."""
    from components.corpus.compose import compose
    from components.corpus.render import render

    audio = render(compose(genre, seed, SECONDS).midi, SAMPLE_RATE, SECONDS)
    return (audio * np.float32(gain)).astype(np.float32)


def record(tf_python: str, fixture: Path = FIXTURE) -> None:
    """Run musicnn's TensorFlow extractor on every clip and write the fixture."""
    import soundfile

    clips = (*CLIPS, LOUD_CLIP)
    audios = [render_clip(*clip) for clip in clips]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, audio in enumerate(audios):
            paths.append(str(Path(folder) / f"clip{i}.wav"))
            soundfile.write(paths[-1], audio, SAMPLE_RATE, subtype="FLOAT")  # float: the exact samples
        raw = Path(folder) / "tf.npz"
        subprocess.run([tf_python, "-c", _TF_DRIVER, str(raw), MODEL, *paths], check=True)
        with np.load(raw) as tf_out:
            outputs = {key: tf_out[key] for key in tf_out.files}
    fixture.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        fixture,
        clips=np.array(json.dumps(clips)),
        # The RMS of each clip, so a change in the renderer shows up as that, not as a parity failure.
        rms=np.array([np.sqrt(np.mean(np.square(a, dtype=np.float64))) for a in audios]),
        **outputs,
    )
    print(f"wrote {fixture} ({fixture.stat().st_size} bytes): {outputs['versions']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", required=True, help="a Python with tensorflow, tf-keras, librosa and musicnn")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    record(args.tf_python, args.out)


if __name__ == "__main__":
    main()
