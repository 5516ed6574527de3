"""Fréchet distance: zero on itself, monotone in shift and scale, and equal to the reference implementations
(fadtk 1.1.0, frechet-audio-distance 0.3.4) and to 40-digit arithmetic; statistics files round trip."""

from __future__ import annotations

import ast
import importlib.metadata
import logging
import warnings
from collections.abc import Callable

import mpmath
import numpy as np
import pytest
from numpy.lib.scimath import sqrt as scisqrt
from scipy import linalg

from model.errors import ModelInputError
from model.frechet import GaussianStats, frechet_audio_distance, frechet_distance, gaussian_stats

pytestmark = pytest.mark.unit


def _reference(distribution: str, file: str, function: str, cls: str | None = None) -> Callable:
    """One function of a reference package, compiled from its source file without importing the package.

    fadtk's and frechet-audio-distance's modules import torchaudio, laion_clap and encodec at import
    time, none of which can be installed beside this stack (see DESIGN.md). Their distance and
    statistics functions need only numpy and scipy, so we locate the file through the package metadata,
    take that one FunctionDef out of its syntax tree and run it in a namespace holding the few names it
    uses: the numbers come from the packages' own code, not from a copy of it.
    """
    path = importlib.metadata.distribution(distribution).locate_file(file)
    tree = ast.parse(path.read_text(), filename=str(path))
    body = tree.body
    if cls is not None:
        body = next(node for node in body if isinstance(node, ast.ClassDef) and node.name == cls).body
    node = next(node for node in body if isinstance(node, ast.FunctionDef) and node.name == function)
    namespace = {"np": np, "linalg": linalg, "scisqrt": scisqrt, "log": logging.getLogger("fad-reference")}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[function]


FADTK_DISTANCE = _reference("fadtk", "fadtk/fad.py", "calc_frechet_distance")
FADTK_STATS = _reference("fadtk", "fadtk/fad.py", "calc_embd_statistics")
_FAD034 = _reference(
    "frechet-audio-distance", "frechet_audio_distance/fad.py", "calculate_frechet_distance", "FrechetAudioDistance"
)


def fad034_distance(mu1, sigma1, mu2, sigma2):
    return _FAD034(None, mu1, sigma1, mu2, sigma2)  # a method that never touches self


def _reference_value(function, a: GaussianStats, b: GaussianStats) -> float:
    with warnings.catch_warnings():
        # Both call scipy.linalg.sqrtm(..., disp=False), deprecated in scipy 1.16 but still working.
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(function(a.mean, a.cov, b.mean, b.cov))


def _sets(d: int, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two embedding sets [n, d]: full-rank, low-rank plus noise of a given size (nearly singular), or n < d."""
    rng = np.random.default_rng(seed)
    if kind == "full":
        x = rng.normal(size=(1000, d)) * rng.uniform(0.5, 2.0, size=d)
        return x, 1.1 * rng.normal(size=(1000, d)) + 0.05
    if kind == "n<d":  # exactly singular, rank n - 1: few frames, as with VGGish on short sets
        return rng.normal(size=(d // 2, d)), 1.1 * rng.normal(size=(d // 2, d)) + 0.05
    noise = float(kind.removeprefix("lowrank"))
    basis = rng.normal(size=(d // 4, d))
    x = rng.normal(size=(1000, d // 4)) @ basis + noise * rng.normal(size=(1000, d))
    y = 1.1 * rng.normal(size=(1000, d // 4)) @ basis + noise * rng.normal(size=(1000, d)) + 0.05
    return x, y


CASES = [(d, kind) for d in (16, 64, 128) for kind in ("full", "lowrank1e-2", "lowrank1e-3", "n<d")]
# Condition numbers of 1e8 and more, where the references' sqrtm(C1 C2) loses accuracy (see model.frechet).
NEARLY_SINGULAR = [(d, kind) for d in (16, 64, 128) for kind in ("lowrank1e-4", "lowrank1e-6")]


def _exact(a: GaussianStats, b: GaussianStats) -> float:
    """The distance in 40-digit arithmetic: Tr sqrt(C1 C2) = sum of sqrt(eig(S1 C2 S1)), S1 = C1^(1/2)."""
    mpmath.mp.dps = 40
    c1, c2 = mpmath.matrix(a.cov.tolist()), mpmath.matrix(b.cov.tolist())
    values, vectors = mpmath.eigsy(c1)
    s1 = vectors * mpmath.diag([mpmath.sqrt(max(v, 0)) for v in values]) * vectors.T
    inner = s1 * c2 * s1
    values2, _ = mpmath.eigsy((inner + inner.T) / 2)
    diff = mpmath.matrix((a.mean - b.mean).tolist())
    total = (diff.T * diff)[0] + sum(c1[i, i] + c2[i, i] for i in range(a.dim))
    return float(total - 2 * sum(mpmath.sqrt(max(v, 0)) for v in values2))


@pytest.mark.parametrize(("d", "kind"), CASES + NEARLY_SINGULAR)
def test_distance_of_a_set_to_itself_is_zero(d, kind):
    x, _ = _sets(d, kind, seed=d)
    stats = gaussian_stats(x)
    assert 0.0 <= frechet_distance(stats, stats) < 1e-8 * np.trace(stats.cov)


@pytest.mark.parametrize(("d", "kind"), CASES)
def test_matches_fadtk_and_frechet_audio_distance(d, kind):
    x, y = _sets(d, kind, seed=d + 1)
    a, b = gaussian_stats(x), gaussian_stats(y)
    ours = frechet_distance(a, b)
    for reference in (FADTK_DISTANCE, fad034_distance):
        assert ours == pytest.approx(_reference_value(reference, a, b), rel=1e-6)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(ours, rel=1e-6)


@pytest.mark.parametrize(("d", "kind"), NEARLY_SINGULAR)
def test_nearly_singular_sqrtm_matches_references_and_symmetric_is_exact(d, kind):
    x, y = _sets(d, kind, seed=d + 2)
    a, b = gaussian_stats(x), gaussian_stats(y)
    sqrtm_value = frechet_distance(a, b, method="sqrtm")
    for reference in (FADTK_DISTANCE, fad034_distance):
        assert sqrtm_value == pytest.approx(_reference_value(reference, a, b), rel=1e-6)
    # The references (and "sqrtm") are ~3e-6 off here; the default stays within the error they share.
    assert frechet_distance(a, b) == pytest.approx(sqrtm_value, rel=1e-5)


@pytest.mark.parametrize("kind", ["lowrank1e-4", "lowrank1e-6", "n<d"])
def test_symmetric_method_agrees_with_40_digit_arithmetic(kind):
    x, y = _sets(16, kind, seed=3)
    a, b = gaussian_stats(x), gaussian_stats(y)
    exact = _exact(a, b)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=1e-10)
    # What the reference algorithm loses on the same matrices, so a regression towards it shows up here.
    assert abs(_reference_value(FADTK_DISTANCE, a, b) - exact) > 1e-12 * exact


def test_gaussian_stats_match_fadtk():
    x = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    mean, cov = FADTK_STATS(x.astype(np.float64))
    stats = gaussian_stats(x)
    assert stats.count == 300 and stats.dim == 32
    assert stats.mean.dtype == np.float64 and stats.cov.dtype == np.float64
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.cov, cov, rtol=1e-12, atol=1e-15)


def test_distance_grows_with_shift_and_scale():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 32)), rng.normal(size=(2000, 32))
    shifts = [frechet_audio_distance(x, y + offset) for offset in (0.0, 0.1, 0.3, 1.0, 3.0)]
    scales = [frechet_audio_distance(x, y * factor) for factor in (1.0, 1.5, 2.0, 4.0)]
    assert shifts == sorted(shifts) and len(set(shifts)) == len(shifts)
    assert scales == sorted(scales) and len(set(scales)) == len(scales)
    # A shift moves only the mean term: |mu_x - mu_y - 3|^2 - |mu_x - mu_y|^2, to rounding.
    gap = x.mean(axis=0) - y.mean(axis=0)
    assert shifts[-1] - shifts[0] == pytest.approx(np.sum((gap - 3.0) ** 2) - np.sum(gap**2), rel=1e-9)


def test_bad_embeddings_are_named():
    with pytest.raises(ValueError, match="at least 2 embeddings, got 1"):
        gaussian_stats(np.zeros((1, 8)))
    with pytest.raises(ValueError, match=r"2-D array \[n, d\], got shape \(10,\)"):
        gaussian_stats(np.zeros(10))
    bad = np.ones((5, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values .* in 1 of 5 rows"):
        gaussian_stats(bad)


def test_dimension_and_embedder_mismatch():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="dimensions: 8 and 16"):
        frechet_audio_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 16)))
    a = gaussian_stats(rng.normal(size=(20, 8)), embedder="mel")
    b = gaussian_stats(rng.normal(size=(20, 8)), embedder="vggish")
    with pytest.raises(ValueError, match="different embedders"):
        frechet_distance(a, b)


def test_a_broken_computation_is_reported_not_clamped():
    # A "covariance" that is not positive semi-definite cannot come from data; never turn it into a distance.
    stats = gaussian_stats(np.random.default_rng(3).normal(size=(50, 4)))
    broken = GaussianStats(stats.mean, -stats.cov, stats.count)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(stats, broken)
    # The reference algorithm on a rank-deficient set against itself lands ~-2e-8 x trace below zero,
    # well past rounding: reported, with the way out.
    x, _ = _sets(64, "lowrank1e-6", seed=4)
    rank_deficient = gaussian_stats(x)
    with pytest.raises(ValueError, match=r"negative .*'symmetric' method"):
        frechet_distance(rank_deficient, rank_deficient, method="sqrtm")


def test_stats_round_trip(tmp_path):
    stats = gaussian_stats(np.random.default_rng(4).normal(size=(40, 6)), embedder="mel")
    path = stats.save(tmp_path / "ref" / "stats.npz")
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]
    loaded = GaussianStats.load(path)
    assert (loaded.count, loaded.embedder) == (40, "mel")
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    assert frechet_distance(stats, loaded) == 0.0
    unnamed = GaussianStats.load(GaussianStats(stats.mean, stats.cov, 40).save(tmp_path / "plain"))
    assert unnamed.embedder is None and (tmp_path / "plain").is_file()  # the name is kept as given


def test_bad_stats_files_are_named(tmp_path):
    with pytest.raises(ModelInputError, match=f"no statistics file at {tmp_path / 'none.npz'}"):
        GaussianStats.load(tmp_path / "none.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ModelInputError, match=r"cannot read statistics file .*garbage\.npz"):
        GaussianStats.load(garbage)
    partial = tmp_path / "partial.npz"
    with open(partial, "wb") as handle:
        np.savez(handle, mean=np.zeros(3))
    with pytest.raises(ModelInputError, match=r"partial.npz lacks \['count', 'cov'\]"):
        GaussianStats.load(partial)
    wrong = tmp_path / "wrong.npz"
    with open(wrong, "wb") as handle:
        np.savez(handle, mean=np.zeros(3), cov=np.eye(4), count=5)
    with pytest.raises(ValueError, match=r"\[3, 3\] to match the mean"):
        GaussianStats.load(wrong)
