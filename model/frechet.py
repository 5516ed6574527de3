"""Fréchet distance between Gaussians fitted to embedding sets: the core of Fréchet Audio Distance (FAD).

FAD fits a Gaussian (mean, covariance) to the frame embeddings of each audio set and reports

    d^2 = |mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)).

The statistics of a reference set are worth keeping (`GaussianStats.save`): evaluation computes them
once and monitoring compares live traffic against the same file.

Two ways to get Tr((C1 C2)^(1/2)):

- "symmetric" (default): the sum of the singular values of S1 S2, where Si is the symmetric PSD square
  root of Ci (C1 C2 is similar to (S1 S2)(S1 S2)^T, whose eigenvalues are those singular values
  squared). Every step works on symmetric or well-scaled matrices, so it stays accurate to ~1e-13
  relative even for nearly singular covariances (checked against 40-digit arithmetic in the tests).
- "sqrtm": scipy.linalg.sqrtm of the non-symmetric product C1 C2, the pytorch-fid algorithm that
  fadtk and frechet-audio-distance use. Squaring the covariances before the square root loses half
  the digits: with nearly singular covariances (common when frames are few or features are
  redundant) it is off by ~3e-6 relative, and a set compared with itself comes out near -2e-8 x
  trace. Kept to reproduce published numbers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import linalg

from model.atomic_io import atomic_file
from model.errors import ModelInputError

Method = Literal["symmetric", "sqrtm"]

# A distance is a sum of O(scale) terms, so float64 rounding leaves errors of ~1e-13 x scale; a value
# below zero by more than this is a real failure (bad inputs or a broken algorithm), never rounding.
_NEGATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == has no single truth value
class GaussianStats:
    """Mean [d] and covariance [d, d] of `count` embeddings, float64; `embedder` names what made them
    (when known) so statistics from different embedders are never compared by mistake."""

    mean: np.ndarray
    cov: np.ndarray
    count: int
    embedder: str | None = None

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector [d], got shape {mean.shape}")
        if cov.shape != (mean.size, mean.size):
            raise ValueError(f"covariance must be [{mean.size}, {mean.size}] to match the mean, got {cov.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise ValueError("mean and covariance must be finite")
        if np.abs(cov - cov.T).max(initial=0.0) > 1e-8 * np.abs(cov).max(initial=0.0):
            raise ValueError("covariance must be symmetric")
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 embeddings, got count={self.count}")
        # Frozen: assign the normalised arrays through object.__setattr__, the dataclass-sanctioned way.
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "count", int(self.count))

    @property
    def dim(self) -> int:
        """The embedding dimension d."""
        return int(self.mean.size)

    def save(self, path: str | Path) -> Path:
        """Write the statistics to `path` as .npz, atomically."""
        path = Path(path)
        # Saving through the open file keeps the name as given (np.savez would append ".npz" to a str).
        with atomic_file(path) as handle:
            np.savez(
                handle,
                mean=self.mean,
                cov=self.cov,
                count=np.int64(self.count),
                embedder=np.str_(self.embedder or ""),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> GaussianStats:
        """Read statistics written by `save`; a missing or malformed file raises ModelInputError naming it."""
        path = Path(path)
        if not path.is_file():
            raise ModelInputError(f"no statistics file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"mean", "cov", "count"} - set(data.files)
                if missing:
                    raise ModelInputError(f"statistics file {path} lacks {sorted(missing)}")
                embedder = str(data["embedder"]) if "embedder" in data.files else ""
                return cls(data["mean"], data["cov"], int(data["count"]), embedder or None)
        except ModelInputError:
            raise
        except (OSError, ValueError, EOFError) as error:
            raise ModelInputError(f"cannot read statistics file {path}: {error}") from None


def gaussian_stats(embeddings: np.ndarray, embedder: str | None = None) -> GaussianStats:
    """Mean and covariance (float64, unbiased, one row per embedding) of `embeddings` [n, d], n >= 2."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [n, d], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(
            f"a covariance needs at least 2 embeddings, got {x.shape[0]} (the audio may be shorter than one frame)"
        )
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        raise ValueError(f"embeddings hold non-finite values (NaN or inf) in {bad} of {x.shape[0]} rows")
    return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)), x.shape[0], embedder)


def _psd_sqrt(cov: np.ndarray, label: str) -> np.ndarray:
    values, vectors = linalg.eigh(cov)
    top = max(float(np.abs(values).max()), np.finfo(np.float64).tiny)
    if values.min() < -1e-8 * top:
        raise ValueError(f"covariance {label} is not positive semi-definite (eigenvalue {values.min():.3g})")
    # Eigenvalues a little below zero are rounding noise of an (almost) singular covariance.
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_symmetric(cov1: np.ndarray, cov2: np.ndarray) -> float:
    return float(linalg.svdvals(_psd_sqrt(cov1, "1") @ _psd_sqrt(cov2, "2")).sum())


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray, eps: float) -> float:
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        # A singular product can defeat the Schur method; a tiny ridge makes it invertible (as pytorch-fid).
        offset = np.eye(cov1.shape[0]) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        # The eigenvalues of C1 C2 are real and >= 0; rounding can push the tiny ones negative, whose
        # square roots are small imaginary numbers. A large imaginary part means the inputs are wrong.
        trace_real = float(np.trace(covmean.real))
        imaginary = float(np.abs(np.diagonal(covmean).imag).max())
        if imaginary > 1e-3 * max(1.0, abs(trace_real) / cov1.shape[0]):
            raise ValueError(f"matrix square root has a large imaginary component ({imaginary:.3g})")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6, method: Method = "symmetric") -> float:
    """The squared Fréchet distance between N(a.mean, a.cov) and N(b.mean, b.cov), >= 0.

    `eps` is added to both covariances' diagonals only when the plain computation fails (a singular
    product under "sqrtm", an eigensolver that does not converge under "symmetric").
    """
    if a.dim != b.dim:
        raise ValueError(f"cannot compare statistics of different dimensions: {a.dim} and {b.dim}")
    if a.embedder and b.embedder and a.embedder != b.embedder:
        raise ValueError(f"statistics come from different embedders ({a.embedder!r} and {b.embedder!r})")
    if method not in ("symmetric", "sqrtm"):
        raise ValueError(f"unknown method {method!r}; use 'symmetric' or 'sqrtm'")
    diff = a.mean - b.mean
    if method == "sqrtm":
        trace_sqrt = _trace_sqrt_product(a.cov, b.cov, eps)
    else:
        try:
            trace_sqrt = _trace_sqrt_symmetric(a.cov, b.cov)
        except linalg.LinAlgError:
            offset = np.eye(a.dim) * eps
            trace_sqrt = _trace_sqrt_symmetric(a.cov + offset, b.cov + offset)
    scale = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov))
    distance = scale - 2.0 * trace_sqrt
    if distance < 0.0:
        # Only rounding may be clamped away; anything more negative is a failure to report, not hide.
        if distance < -_NEGATIVE_TOLERANCE * scale:
            hint = " (the 'symmetric' method is accurate there)" if method == "sqrtm" else ""
            raise ValueError(f"Fréchet distance came out negative ({distance:.3g}, scale {scale:.3g}){hint}")
        distance = 0.0
    return distance


def frechet_audio_distance(embeddings_a: np.ndarray, embeddings_b: np.ndarray, method: Method = "symmetric") -> float:
    """FAD between two embedding sets [n_a, d] and [n_b, d] (every frame of every clip, stacked)."""
    return frechet_distance(gaussian_stats(embeddings_a), gaussian_stats(embeddings_b), method=method)
