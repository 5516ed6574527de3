"""SI-SNR and SNR of codec reconstructions (components/codec/metrics.py) on signals whose ratios are known."""

import math

import numpy as np
import pytest

from components.codec.metrics import si_snr_db, snr_db

pytestmark = pytest.mark.unit


def test_snr_and_si_snr_on_known_ratios() -> None:
    t = np.arange(16_000) / 16_000
    reference = np.sin(2 * np.pi * 220 * t)
    orthogonal = 0.1 * np.sin(2 * np.pi * 330 * t)  # a whole number of periods: orthogonal to the reference
    # SNR: an error of a tenth of the signal's amplitude is 20 dB; silence is 0 dB.
    assert snr_db(reference, 0.9 * reference) == pytest.approx(20.0, abs=1e-9)
    assert snr_db(reference, np.zeros_like(reference)) == 0.0
    # SI-SNR: scaling the estimate changes nothing; an orthogonal error of power ratio 1/100 is 20 dB.
    assert si_snr_db(reference, 3.0 * reference) > 100.0
    expected = 10 * math.log10(np.sum(reference**2) / np.sum(orthogonal**2))
    assert si_snr_db(reference, reference + orthogonal) == pytest.approx(expected, abs=1e-6)
    assert si_snr_db(reference, 0.5 * (reference + orthogonal) + 0.2) == pytest.approx(expected, abs=1e-6)
    assert si_snr_db(reference, np.zeros_like(reference)) is None
    assert si_snr_db(reference, np.full_like(reference, 0.25)) is None
