"""The audio every pretrained network here takes: validated mono float32, resampled to the network's own rate.

Shared by the FAD embedders (model/embedders.py) and the musicnn tagger (model/music_tagger.py), so each names
the same faults the same way.
"""

from __future__ import annotations

import numpy as np

from model.errors import ModelInputError


def mono_at(audio: np.ndarray, sample_rate: int, target_rate: int, min_samples: int, who: str) -> np.ndarray:
    """Validated mono float32 audio resampled (soxr, as model.audio) to `target_rate`, at least `min_samples`."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ModelInputError(f"{who} embeds mono audio [samples]; got shape {audio.shape} (mix to mono first)")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ModelInputError(f"{who} needs float audio in [-1, 1]; got dtype {audio.dtype}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ModelInputError(f"sample rate must be a positive integer, got {sample_rate}")
    if not np.isfinite(audio).all():
        raise ModelInputError(f"{who}: audio holds non-finite samples (NaN or inf)")
    audio = audio.astype(np.float32, copy=False)
    if sample_rate != target_rate:
        import soxr

        audio = soxr.resample(audio, int(sample_rate), target_rate, quality="HQ").astype(np.float32, copy=False)
    if audio.size < min_samples:
        raise ModelInputError(
            f"{who} needs at least {min_samples / target_rate:.3f} s of audio, got {audio.size / target_rate:.3f} s"
        )
    return audio
