"""What drifted, in words: the lines `musicops monitor check` prints under a drift verdict.

    explain(window, reference, drifted)  ->  ["prompts: words frequent here and rare in the reference: 'cumbia'
                                               (42% of requests, 0% of the reference), ...",
                                              "audio: spectral centroid higher (median 3310 Hz vs 1790 Hz), ..."]

The words compare document frequencies: the share of the window's prompts that hold a word against the share of
the reference prompts (the evaluation's held-out captions, written like the training captions) that do. A feature
is described by its median in the window against the reference's, with model.audio_quality's label and unit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import pandas as pd

from monitoring.drift import feature_group

# Two or more letters of any script: numbers ("92 bpm") are the tempo feature's business, and a lone letter (a key's
# "G", the "k" of "k-pop") says nothing.
_WORD = re.compile(r"[^\W\d_]{2,}")
# A trend: a word in at least MIN_SHARE more of the window's prompts than of the reference's, and twice as often
# (smaller gaps come and go between windows of the same traffic: a key's letter, "minor").
MIN_SHARE = 0.1
MAX_TERMS = 5

_PROMPT_LABELS = {
    "prompt_chars": ("prompt length", "characters"),
    "prompt_words": ("words per prompt", ""),
    "prompt_digit_share": ("digits in prompts", "share"),
    "prompt_non_ascii_share": ("non-ASCII letters in prompts (another script or emoji)", "share"),
    "prompt_upper_share": ("upper-case letters in prompts", "share"),
}


def _words(prompt: str) -> set[str]:
    return set(_WORD.findall(str(prompt).lower()))


def _shares(prompts: Iterable[str]) -> tuple[Counter, int]:
    counts, n = Counter(), 0
    for prompt in prompts:
        counts.update(_words(prompt))
        n += 1
    return counts, n


def prompt_terms(
    window: Sequence[str], reference: Sequence[str], top: int = MAX_TERMS, min_share: float = MIN_SHARE
) -> list[tuple[str, float, float]]:
    """The words in a share of the window's prompts at least `min_share` above, and twice, their share of the
    reference prompts, most over-represented first: (word, share in the window, share in the reference)."""
    here, n_here = _shares(window)
    there, n_there = _shares(reference)
    if not n_here:
        return []
    terms = []
    for word, count in here.items():
        share, usual = count / n_here, there[word] / max(n_there, 1)
        if share - usual >= min_share and share >= 2 * usual:
            terms.append((word, share, usual))
    return sorted(terms, key=lambda term: (term[2] - term[1], term[0]))[:top]


def _label(name: str) -> tuple[str, str]:
    from model.audio_quality import FEATURES

    if name in FEATURES:
        return FEATURES[name].label[0].lower() + FEATURES[name].label[1:], FEATURES[name].unit
    if name.startswith("prompt_embedding_"):
        return f"prompt meaning (embedding component {name.rsplit('_', 1)[1]})", ""
    return _PROMPT_LABELS.get(name, (name, ""))


def describe_feature(name: str, window: pd.Series, reference: pd.Series) -> str:
    """One drifted feature as a phrase: "spectral centroid higher (median 3310 Hz vs 1790 Hz)"."""
    label, unit = _label(name)
    now, usual = pd.to_numeric(window, errors="coerce").median(), pd.to_numeric(reference, errors="coerce").median()
    if pd.isna(now) or pd.isna(usual):
        return f"{label} changed"
    direction = "higher" if now > usual else "lower" if now < usual else "spread differently"
    unit = f" {unit}" if unit and unit != "share" else ""
    return f"{label} {direction} (median {now:.3g}{unit} vs {usual:.3g}{unit})"


def explain(window: pd.DataFrame, reference: pd.DataFrame, drifted: Sequence[str]) -> list[str]:
    """Lines saying what drifted: the prompt words that are new or frequent, then each group's drifted features."""
    lines = []
    terms = prompt_terms(window["prompt"].dropna().tolist(), reference["prompt"].dropna().tolist())
    if terms:
        listed = ", ".join(
            f"'{word}' ({share:.0%} of requests, {usual:.0%} of the reference)" for word, share, usual in terms
        )
        lines.append(f"prompts: words frequent here and rare in the reference: {listed}")
    for group in ("prompt", "audio"):
        names = [name for name in drifted if feature_group(name) == group]
        if names:
            phrases = [describe_feature(name, window[name], reference[name]) for name in names]
            lines.append(f"{group} features: " + "; ".join(phrases))
    return lines
