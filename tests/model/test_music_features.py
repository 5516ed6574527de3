"""Key names and the MIREX key score (model/music_features.py), with scores written out from MIREX's rules."""

import pytest

from model.music_features import MODES, key_name, key_score, mirex_key_name, parse_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("true", "estimated", "score"),
    [
        ("C major", "C major", 1.0),
        ("C major", "G major", 0.5),  # a fifth above
        ("C major", "F major", 0.0),  # a fifth below (a fourth above): MIREX gives it nothing
        ("A minor", "E minor", 0.5),
        ("A minor", "D minor", 0.0),
        ("C major", "A minor", 0.3),  # relative minor
        ("A minor", "C major", 0.3),  # relative major
        ("C major", "C minor", 0.2),  # parallel
        ("B-flat major", "F major", 0.5),  # across flats and naturals
        ("C-sharp minor", "E major", 0.3),
        ("F-sharp major", "D-flat major", 0.5),
        ("C major", "D major", 0.0),
        ("C major", "E minor", 0.0),
    ],
)
def test_key_score_follows_mirex(true: str, estimated: str, score: float) -> None:
    assert key_score(parse_key(estimated), parse_key(true)) == score


def test_mirex_names_keep_the_corpus_spelling() -> None:
    assert mirex_key_name(10, "major") == "Bb major" and mirex_key_name(1, "minor") == "C# minor"
    assert mirex_key_name(*parse_key("A-flat major")) == "Ab major"
    for mode in MODES:
        for root in range(12):
            name = mirex_key_name(root, mode)
            assert name == key_name(root, mode).replace("-flat", "b").replace("-sharp", "#")
            assert key_score((root, mode), (root, mode)) == 1.0  # every name is one mir_eval reads
