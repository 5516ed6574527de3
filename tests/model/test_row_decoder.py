"""Continuous batching's decoding: rows that join a running batch later, or leave it early, get the
logits, and with their own seeds the tokens and audio, they would get decoded alone."""

import numpy as np
import pytest
import torch

from model.continuous_batch import ContinuousBatch, RowRequest
from model.decoder_step import CachedDecoder
from model.generation_params import GenerationParams

pytestmark = pytest.mark.integration


def _alone(micro, states, mask, tokens):
    """Logits of one request (its conditional and unconditional rows) decoded from position 0 alone."""
    decoder = CachedDecoder(micro.model.decoder)
    decoder.start(states, mask, capacity=len(tokens))
    return [decoder.step(step.expand(states.shape[0], -1, -1)) for step in tokens]


@torch.inference_mode()
def test_rows_joining_and_leaving_get_the_logits_they_get_alone(micro):
    # A row joins at step 5, another at step 9 (a prompt of another length), the first leaves at step 12;
    # with windows of 16 positions the cache drops the columns nobody owns any more on the way.
    prompts = ["calm piano", "loud rock with distorted guitars and drums", "folk"]
    texts = [micro.encode_text([p]).rows(3.0) for p in prompts]
    joins, leave, steps = [0, 5, 9], {0: 12}, 21
    tokens = torch.randint(0, 64, (steps, 4, 1), generator=torch.Generator().manual_seed(0))
    decoder = micro.row_decoder(16)
    live, got = [], {r: [] for r in range(3)}
    for t in range(steps):
        for r, join in enumerate(joins):
            if join == t:
                decoder.add(*texts[r])
                live.append(r)
        for r, when in leave.items():
            if when == t:
                decoder.keep(torch.tensor([2 * i + j for i, o in enumerate(live) if o != r for j in (0, 1)]))
                live.remove(r)
        fed = torch.cat([tokens[t - joins[r]][None].expand(2, -1, -1) for r in live])
        logits = decoder.step(fed)
        for i, r in enumerate(live):
            got[r].append(logits[2 * i : 2 * i + 2])
    assert decoder.length < steps  # it made room by dropping columns
    for r in range(3):
        expected = _alone(micro, *texts[r], tokens[: len(got[r])])
        assert len(got[r]) == min(steps, leave.get(r, steps)) - joins[r]
        for mine, theirs in zip(got[r], expected, strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_the_cache_grows_for_long_rows(micro):
    text = micro.encode_text(["ambient"]).rows(1.0)
    tokens = torch.randint(0, 64, (90, 4, 1), generator=torch.Generator().manual_seed(1))
    decoder = micro.row_decoder(100)
    decoder.add(*text)
    got = [decoder.step(step[None]) for step in tokens]
    assert decoder.keys[0].shape[2] > 90
    for mine, theirs in zip(got, _alone(micro, *text, tokens), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_a_row_past_its_window_is_refused(micro):
    decoder = micro.row_decoder(3)
    decoder.add(*micro.encode_text(["x"]).rows(1.0))
    for _ in range(3):
        decoder.step(torch.zeros(1, 4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="pass 3 positions"):
        decoder.step(torch.zeros(1, 4, 1, dtype=torch.long))


def _drain(batch: ContinuousBatch, joins: dict[str, tuple] | None = None) -> tuple[dict, dict]:
    """Step `batch` until every row is done, adding each (step, prompt, duration, seed) of `joins` at its step.
    Returns each row's audio, and the codes [K, frames] of the rows `joins` added."""
    chunks: dict = {}
    rows: dict = {}
    step = 0
    while len(batch) or any(at >= step for at, *_ in (joins or {}).values()):
        for handle, (at, prompt, duration, seed) in (joins or {}).items():
            if at == step:
                batch.add([RowRequest(handle, prompt, duration, seed)])
                rows[handle] = batch.rows[-1]
        for emitted in batch.step():
            if emitted.chunk is not None:
                chunks.setdefault(emitted.handle, []).append(emitted.chunk)
        step += 1
    codes = {handle: row.codec.frames[0] for handle, row in rows.items()}
    return {handle: np.concatenate(parts) for handle, parts in chunks.items()}, codes


def test_one_row_streams_exactly_what_the_generator_streams(micro):
    params = GenerationParams(duration=0.7, seed=4)
    batch = ContinuousBatch(micro, params, chunk_frames=10, first_chunk_frames=2)
    batch.add([RowRequest("a", "soft synth pads", 0.7, 4)])
    clip = _drain(batch)[0]["a"]
    expected = np.concatenate(
        [c[0] for c in micro.stream(["soft synth pads"], params, chunk_frames=10, first_chunk_frames=2)]
    )
    np.testing.assert_array_equal(clip, expected)


def test_greedy_rows_that_join_late_sound_as_they_would_alone(micro):
    # Greedy decoding draws nothing, so each row's audio must not depend on its company.
    params = GenerationParams(duration=0.8, temperature=0.0)
    batch = ContinuousBatch(micro, params)
    joins = {
        "first": (0, "drums and bass", 0.8, 0),
        "late": (13, "a slow waltz on strings", 0.5, 0),
        "early": (2, "", 0.3, 0),
    }
    clips, _ = _drain(batch, joins)
    for handle, (_, prompt, duration, _) in joins.items():
        alone = micro.stream([prompt], GenerationParams(duration=duration, temperature=0.0))
        expected = np.concatenate([c[0] for c in alone])
        assert clips[handle].shape == (round(duration * micro.sample_rate),)
        np.testing.assert_allclose(clips[handle], expected, atol=1e-4)


def test_sampled_rows_draw_with_their_own_seeds_wherever_they_join(micro):
    # Sampling with guidance: each row's tokens are what its prompt and seed give alone, whether it started the
    # batch or joined it mid-way (at step 9, beside rows at other positions); one prompt with two seeds differs.
    params = GenerationParams(duration=0.8)
    joins = {
        "first": (0, "drums and bass", 0.8, 21),
        "twin": (0, "drums and bass", 0.8, 22),
        "late": (9, "a slow waltz on strings", 0.5, 23),
        "later": (15, "", 0.3, 21),
    }
    clips, codes = _drain(ContinuousBatch(micro, params), joins)
    for handle, (_, prompt, duration, seed) in joins.items():
        alone = micro.generate([prompt], GenerationParams(duration=duration, seed=seed))
        assert torch.equal(codes[handle], alone.codes[0]), handle
        assert clips[handle].shape == (round(duration * micro.sample_rate),)
    assert not torch.equal(codes["first"], codes["twin"])


def test_only_requests_within_one_window_fit(micro):
    assert ContinuousBatch.fits(micro, GenerationParams(duration=1.0))
    assert not ContinuousBatch.fits(micro, GenerationParams(duration=1.5))  # the micro context is 1 s
    assert not ContinuousBatch.fits(micro, GenerationParams(duration=0.5, num_beams=2))
