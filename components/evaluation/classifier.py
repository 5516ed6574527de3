"""An in-domain label classifier trained on real clips' embeddings, in the spirit of MusicGen's KL metric.

MusicGen scores a generated clip by the KL divergence between a pretrained tagger's label
distribution on the real clip of the same caption and on the generated one; the pretrained musicnn
tagger does that here (music_models.py), with tags that miss some of this corpus's genres. This
classifier is trained on the real training clips' embeddings (one corpus label, the genre by default),
so it knows every genre of the corpus and its sources: accuracy on generated audio says whether the audio
sounds like its prompt's label, and KL(real || generated) whether it sounds like the real clip of the prompt.
"""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr


def clip_vector(frames: np.ndarray) -> np.ndarray:
    """One vector per clip from its frame embeddings [frames, dim]: their mean and standard deviation."""
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


class LabelClassifier:
    """Standardised logistic regression over clip vectors: small, deterministic, seconds to fit."""

    def __init__(self, seed: int = 0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, random_state=seed))

    def fit(self, vectors: np.ndarray, labels: list[str]) -> LabelClassifier:
        if len(set(labels)) < 2:
            raise ValueError(f"the label classifier needs at least two classes, got {sorted(set(labels))}")
        self.pipeline.fit(vectors, labels)
        return self

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """[clips, classes] label probabilities, columns in `classes` order."""
        return self.pipeline.predict_proba(vectors)

    def accuracy(self, vectors: np.ndarray, labels: list[str]) -> np.ndarray:
        """Per clip: 1.0 where the most probable label is the clip's label, else 0.0."""
        predicted = np.array(self.classes)[self.probabilities(vectors).argmax(axis=1)]
        return (predicted == np.array(labels)).astype(float)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Row-wise KL(p || q) in nats (scipy's rel_entr, summed), with both distributions floored at `eps` and
    renormalised (as MusicGen's metric does), so a label one side gives no probability costs finitely."""
    p = np.clip(p, eps, None)
    q = np.clip(q, eps, None)
    p, q = p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)
    return np.sum(rel_entr(p, q), axis=-1)
