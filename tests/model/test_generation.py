"""Generation: seeds (one per row), guidance, greedy parity with transformers, padding, unconditional, beams."""

import itertools

import numpy as np
import pytest
import torch

from model import GenerationParams, ModelInputError
from model.decoding import _joint_top, beam_window
from model.delay_pattern import build_delay_pattern, valid_positions

pytestmark = pytest.mark.unit

GREEDY = dict(temperature=0.0, duration=0.4)


def test_same_seed_same_audio_other_seed_other_audio(micro):
    params = GenerationParams(duration=0.5, seed=11)
    first = micro.generate(["rock with guitars"], params)
    again = micro.generate(["rock with guitars"], params)
    other = micro.generate(["rock with guitars"], GenerationParams(duration=0.5, seed=12))
    assert np.array_equal(first.audio, again.audio)
    assert first.seed == 11
    assert not torch.equal(first.codes, other.codes)


def test_row_i_of_a_seeded_batch_is_its_prompt_alone_with_seed_plus_i(micro):
    prompts = ["rock with guitars", "a much longer prompt about a slow folk ballad with fiddle", ""]
    batch = micro.generate(prompts, GenerationParams(duration=0.5, seed=11))
    assert batch.seed == 11 and batch.seeds == [11, 12, 13]
    for row, prompt in enumerate(prompts):
        alone = micro.generate([prompt], GenerationParams(duration=0.5, seed=11 + row))
        assert torch.equal(batch.codes[row], alone.codes[0]), prompt
    # The top seed's next row wraps to 0 rather than leaving the range a request may ask for.
    assert micro.generate(["a", "b"], GenerationParams(duration=0.1, seed=2**63 - 1)).seeds == [2**63 - 1, 0]


def test_prompts_with_their_own_seeds_draw_them_in_any_company(micro):
    params = GenerationParams(duration=0.5)
    mixed = micro.generate(["jazz", "calm piano at 80 BPM", "jazz"], params, seeds=[5, 3, 6])
    assert mixed.seeds == [5, 3, 6]
    assert not torch.equal(mixed.codes[0], mixed.codes[2])  # one prompt, two seeds: two clips
    for row, (prompt, seed) in enumerate([("jazz", 5), ("calm piano at 80 BPM", 3), ("jazz", 6)]):
        assert torch.equal(mixed.codes[row], micro.generate([prompt], params, seeds=[seed]).codes[0])
    with pytest.raises(ModelInputError, match="2 seeds for 3 prompts"):
        micro.generate(["a", "b", "c"], params, seeds=[1, 2])
    with pytest.raises(ModelInputError, match="seed must be a non-negative"):
        micro.generate(["a"], params, seeds=[-1])


def test_output_has_the_requested_length_and_rate(micro):
    result = micro.generate(["a", "b c"], GenerationParams(duration=0.33, seed=0))
    assert result.audio.shape == (2, round(0.33 * micro.sample_rate))
    assert result.audio.dtype == np.float32
    assert result.sample_rate == 32_000


def test_greedy_tokens_equal_transformers_generate(micro):
    prompts = ["upbeat jazz with saxophone and brushed drums", "ambient"]
    frames = micro.frames_for(GREEDY["duration"])
    inputs = micro.processor.tokenizer(prompts, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode():
        theirs = micro.model.generate(
            **inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=frames + 3, return_dict_in_generate=False
        )
    ours = micro.generate(prompts, GenerationParams(guidance_scale=3.0, **GREEDY))
    assert np.allclose(ours.audio, theirs[:, 0, : ours.audio.shape[1]].numpy(), atol=1e-6)


def test_a_prompt_alone_and_padded_in_a_batch_give_the_same_music(micro):
    alone = micro.generate(["jazz"], GenerationParams(**GREEDY))
    batched = micro.generate(
        ["jazz", "a much longer prompt about a slow folk ballad with fiddle"], GenerationParams(**GREEDY)
    )
    assert torch.equal(alone.codes[0], batched.codes[0])


def test_empty_prompt_is_unconditional(micro):
    guided = micro.generate([""], GenerationParams(guidance_scale=3.0, **GREEDY))
    unguided = micro.generate([""], GenerationParams(guidance_scale=1.0, **GREEDY))
    # with no text the conditional and unconditional rows agree, so guidance changes nothing
    assert torch.equal(guided.codes, unguided.codes)
    text = micro.encode_text(["jazz", ""])
    assert text.mask[1].sum() == 0 and not text.states[1].any()
    special = micro.model.decoder.config.vocab_size
    with torch.inference_mode():
        micro.decoder.start(text.states, text.mask, capacity=1)
        logits = micro.decoder.step(torch.full((2, micro.num_codebooks, 1), special))
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)  # the text reaches the decoder


def test_joint_top_matches_brute_force():
    torch.manual_seed(0)
    logprobs = torch.randn(2, 3, 5).log_softmax(-1)
    free = torch.tensor([True, False, True])
    forced = torch.tensor([[0, 4, 0], [0, 2, 0]])
    scores, tokens = _joint_top(logprobs, free, forced, n=4)
    for row in range(2):
        options = []
        for a, c in itertools.product(range(5), range(5)):
            choice = (a, int(forced[row, 1]), c)
            options.append((float(logprobs[row, 0, a] + logprobs[row, 2, c]), choice))
        options.sort(reverse=True)
        assert [tuple(t) for t in tokens[row].tolist()] == [c for _, c in options[:4]]
        assert torch.allclose(scores[row], torch.tensor([s for s, _ in options[:4]]))


def _guided_logprob(micro, prompt, frames, scale):
    """Teacher-forced log-probability of `frames` [1, K, T] under guidance, summed over free cells."""
    text = micro.encode_text([prompt])
    states, mask = text.rows(scale)
    grid = build_delay_pattern(frames, micro.model.decoder.config.vocab_size)
    micro.decoder.start(states, mask, capacity=grid.shape[2])
    valid = valid_positions(grid.shape[1], grid.shape[2])
    total = 0.0
    for column in range(1, grid.shape[2]):
        logits = micro.decoder.step(torch.cat([grid[:, :, column - 1 : column]] * 2))
        logprobs = (logits[1] + scale * (logits[0] - logits[1])).log_softmax(-1)
        for k in range(grid.shape[1]):
            if valid[k, column]:
                total += float(logprobs[k, grid[0, k, column]])
    return total


@torch.inference_mode()
def test_beam_search_scores_its_output_and_beats_greedy(micro):
    params = GenerationParams(duration=0.2, num_beams=4, guidance_scale=3.0)
    frames = micro.frames_for(params.duration)
    text = micro.encode_text(["folk with fiddle"])
    empty = torch.zeros(1, micro.num_codebooks, 0, dtype=torch.long)
    best, score = beam_window(micro.decoder, text, empty, frames, params)
    assert best.shape == (1, micro.num_codebooks, frames)
    assert score.item() == pytest.approx(_guided_logprob(micro, "folk with fiddle", best, 3.0), abs=1e-3)
    greedy = micro.generate(["folk with fiddle"], GenerationParams(duration=0.2, temperature=0.0)).codes
    assert score.item() >= _guided_logprob(micro, "folk with fiddle", greedy, 3.0) - 1e-4
    one_beam, _ = beam_window(micro.decoder, text, empty, frames, GenerationParams(duration=0.2, num_beams=1))
    assert torch.equal(one_beam, greedy)


def test_beam_search_through_generate(micro):
    result = micro.generate(["a", "b"], GenerationParams(duration=0.3, num_beams=3))
    again = micro.generate(["a", "b"], GenerationParams(duration=0.3, num_beams=3))
    assert result.audio.shape == (2, round(0.3 * micro.sample_rate))
    assert torch.equal(result.codes, again.codes)


def test_bfloat16_decoder_follows_float32(micro, micro_dir):
    from model import MusicGenerator

    half = MusicGenerator.load(micro_dir, dtype=torch.bfloat16)
    assert half.model.decoder.dtype == torch.bfloat16
    text32, text16 = micro.encode_text(["jazz"]), half.encode_text(["jazz"])
    special = micro.model.decoder.config.vocab_size
    start = torch.full((1, micro.num_codebooks, 1), special)
    with torch.inference_mode():
        micro.decoder.start(text32.states, text32.mask, capacity=1)
        half.decoder.start(text16.states, text16.mask, capacity=1)
        full, reduced = micro.decoder.step(start), half.decoder.step(start)
    assert reduced.dtype == torch.float32  # sampling always sees float32
    assert torch.allclose(full, reduced, atol=0.05)
    audio = half.generate(["jazz"], GenerationParams(duration=0.3, seed=0)).audio
    assert audio.shape == (1, round(0.3 * 32_000)) and np.isfinite(audio).all()
