"""model.musicgen_small: the micro twin's T5 vocabulary is the tests' tokenizer's, so its embeddings fit it."""

import pytest

from model.musicgen_small import MICRO_T5_VOCAB
from tests.support.musicgen_small import t5_tokenizer

pytestmark = pytest.mark.unit


def test_the_micro_configs_t5_vocabulary_fits_the_micro_tokenizer():
    assert len(t5_tokenizer()) == MICRO_T5_VOCAB
