"""The parameters of one generation request, checked before any work starts, and the seeds of its rows.

Every row of a batch samples from its own random generator, seeded with its own seed, so what a row draws does
not depend on the rows beside it. When one seed covers several prompts (`params.seed` for a batch), row i's
seed is `row_seeds(seed, n)[i]` = seed + i (modulo 2**63): row 0 draws what the seed draws alone, and row i is
reproduced alone with seed + i.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from model.errors import ModelInputError

SEED_LIMIT = 2**63  # seeds are non-negative 64-bit integers (torch takes any of them)
DRAWN_SEED_LIMIT = 2**31  # a drawn seed fits every client's integer type (JavaScript's included)


def draw_seed() -> int:
    """A seed for a request that gave none, drawn where it is fixed so that it can be reported."""
    return random.randrange(DRAWN_SEED_LIMIT)


def row_seeds(seed: int, rows: int) -> list[int]:
    """The seeds of `rows` rows that one seed covers: seed, seed + 1, ... (wrapping within the valid range)."""
    return [(seed + row) % SEED_LIMIT for row in range(rows)]


def check_seed(seed: int) -> None:
    """Raise ModelInputError unless `seed` is a non-negative 64-bit integer."""
    if not 0 <= seed < SEED_LIMIT:
        raise ModelInputError(f"seed must be a non-negative 64-bit integer, got {seed}")


@dataclass(frozen=True)
class GenerationParams:
    """Every knob of a generation, with MusicGen's defaults (top-k 250, guidance 3, temperature 1).

    temperature 0 means greedy decoding; top_k 0 and top_p 0 turn those filters off; guidance_scale 1
    turns classifier-free guidance off. num_beams > 1 runs beam search over the guided log-probabilities
    (deterministic, so sampling settings are ignored). With a fixed number of frames every hypothesis has
    the same length, so there is no length penalty or early stopping to set.
    """

    duration: float = 10.0
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    seed: int | None = None
    num_beams: int = 1

    def check(self, max_duration: float) -> None:
        """Raise ModelInputError naming the first parameter out of range."""
        if not self.duration > 0:
            raise ModelInputError(f"duration must be positive, got {self.duration} s")
        if self.duration > max_duration:
            raise ModelInputError(f"duration {self.duration} s is beyond this model's limit of {max_duration} s")
        if not 1.0 <= self.guidance_scale <= 20.0:
            raise ModelInputError(f"guidance scale must be between 1 (off) and 20, got {self.guidance_scale}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ModelInputError(f"top-p must be between 0 (off) and 1, got {self.top_p}")
        if self.top_k < 0:
            raise ModelInputError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if not 0.0 <= self.temperature <= 10.0:
            raise ModelInputError(f"temperature must be between 0 (greedy) and 10, got {self.temperature}")
        if not 1 <= self.num_beams <= 16:
            raise ModelInputError(f"beams must be between 1 and 16, got {self.num_beams}")
        if self.seed is not None:
            check_seed(self.seed)
