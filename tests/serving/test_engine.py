"""The generation engine: batching of compatible requests (seeded ones too, each as it sounds alone), requests
joining a running batch, streams whose chunks add up to the whole clip, cancellation freeing the worker (or just
the stream's row), and a bounded queue; on the torch and the ONNX Runtime backends."""

import asyncio
import time

import numpy as np
import pytest

from model.errors import ModelInputError
from model.generation_params import GenerationParams
from model.generator import MusicGenerator
from model.onnx_backend import OnnxMusicGenerator
from model.row_decoder import RowDecoder
from serving.engine import EngineBusy, GenerationEngine, batch_key
from tests.support.code_audio import spell_codes

pytestmark = pytest.mark.integration


def _run(engine_factory, body):
    async def main():
        engine = engine_factory()
        engine.start()
        try:
            return await body(engine)
        finally:
            engine.stop()

    return asyncio.run(main())


@pytest.mark.unit
def test_requests_with_equal_sampling_settings_share_a_batch_whatever_their_seeds():
    base = GenerationParams(duration=1.0)
    assert batch_key(base) == batch_key(GenerationParams(duration=1.0))
    assert batch_key(base) != batch_key(GenerationParams(duration=2.0))
    assert batch_key(base, join=True) == batch_key(GenerationParams(duration=2.0), join=True)
    assert batch_key(base, join=True) != batch_key(GenerationParams(duration=1.0, top_k=10), join=True)
    assert batch_key(GenerationParams(duration=1.0, seed=3)) == batch_key(base)
    assert batch_key(GenerationParams(duration=2.0, seed=4), join=True) == batch_key(base, join=True)
    assert batch_key(GenerationParams(duration=1.0, num_beams=2)) is None


@pytest.fixture
def slow_steps(monkeypatch):
    """Decoding steps of 5 ms and a record of how many rows each had: a running batch lasts long enough
    for requests to arrive while it decodes."""
    rows: list[int] = []
    step = RowDecoder.step

    def slow(self, tokens):
        rows.append(tokens.shape[0])
        time.sleep(0.005)
        return step(self, tokens)

    monkeypatch.setattr(RowDecoder, "step", slow)
    return rows


async def _first_chunk(stream) -> None:
    async for _ in stream:
        return


def test_a_request_arriving_mid_batch_joins_it_and_sounds_as_it_would_alone(micro, slow_steps):
    greedy = GenerationParams(duration=1.0, temperature=0.0)  # draws nothing: company cannot change a clip

    async def body(engine):
        first = engine.submit("drums and bass", greedy)
        first_audio = asyncio.ensure_future(first.audio())
        while first.stats.first_chunk_s is None:
            await asyncio.sleep(0.005)
        late = engine.submit("a slow waltz", GenerationParams(duration=0.4, temperature=0.0))
        late_audio = await late.audio()
        return first, await first_audio, late, late_audio, engine.joined

    first, first_audio, late, late_audio, joined = _run(lambda: GenerationEngine(micro), body)
    assert joined == 1 and late.stats.batch_size == 2 and first.stats.batch_size == 1
    # The late request's audio began and ended while the first one was still decoding.
    assert late.submitted + late.stats.generation_s < first.submitted + first.stats.generation_s
    assert max(slow_steps) == 4  # two requests, each a conditional and an unconditional row
    alone = micro.stream(["a slow waltz"], GenerationParams(duration=0.4, temperature=0.0))
    np.testing.assert_allclose(late_audio, np.concatenate([c[0] for c in alone]), atol=1e-4)
    assert first_audio.shape == (micro.sample_rate,) and late_audio.shape == (round(0.4 * micro.sample_rate),)


def test_without_joining_a_late_request_waits_for_the_running_batch(micro):
    async def body(engine):
        first = engine.submit("drums and bass", GenerationParams(duration=8.0))
        first_audio = asyncio.ensure_future(first.audio())
        await asyncio.sleep(0.1)  # it is decoding
        late = engine.submit("a slow waltz", GenerationParams(duration=8.0))
        await asyncio.gather(first_audio, late.audio())
        return first, late, engine.joined

    first, late, joined = _run(lambda: GenerationEngine(micro, join=False), body)
    assert joined == 0 and late.stats.batch_size == 1
    assert late.submitted + late.stats.queued_s >= first.submitted + first.stats.generation_s


def test_a_cancelled_stream_leaves_a_shared_batch_at_once(micro, slow_steps):
    params = GenerationParams(duration=1.0)

    async def body(engine):
        stay, leave = engine.submit("stays", params), engine.submit("leaves", params)
        await _first_chunk(leave)
        leave.cancel()
        return await stay.audio(), leave.stats

    clip, left = _run(lambda: GenerationEngine(micro, batch_window_s=0.5), body)
    assert left.batch_size == 2 and left.audio_s < 1.0
    assert clip.shape == (micro.sample_rate,)  # the other stream went on to the end
    frames = micro.frames_for(1.0) + micro.num_codebooks
    assert slow_steps[0] == 4 and slow_steps[-1] == 2 and len(slow_steps) == frames - 1


def test_a_waiting_request_that_cannot_join_runs_before_later_joiners(micro, slow_steps):
    async def body(engine):
        first = engine.submit("first", GenerationParams(duration=1.0))
        await _first_chunk(first)
        other = engine.submit("other settings", GenerationParams(duration=0.3, guidance_scale=1.5))
        later = engine.submit("could join", GenerationParams(duration=0.3))
        await asyncio.gather(first.audio(), other.audio(), later.audio())
        return other.stats, later.stats, engine.joined

    other, later, joined = _run(lambda: GenerationEngine(micro), body)
    assert joined == 0  # the compatible one did not jump the queue by joining
    assert other.queued_s < later.queued_s


def test_concurrent_requests_run_as_one_batch_and_each_gets_its_clip(micro):
    params = GenerationParams(duration=0.6)

    async def body(engine):
        streams = [engine.submit(f"prompt {i}", params) for i in range(3)]
        clips = await asyncio.gather(*(stream.audio() for stream in streams))
        return streams, clips

    streams, clips = _run(lambda: GenerationEngine(micro, batch_window_s=0.5), body)
    assert [stream.stats.batch_size for stream in streams] == [3, 3, 3]
    seeds = [stream.stats.seed for stream in streams]
    assert len(set(seeds)) == 3  # a seed drawn for each
    assert all(clip.shape == (round(0.6 * micro.sample_rate),) for clip in clips)
    # Row i is prompt i of one batched generation with the seeds the streams report.
    same = micro.generate([f"prompt {i}" for i in range(3)], GenerationParams(duration=0.6), seeds=seeds)
    np.testing.assert_allclose(np.stack(clips), same.audio, atol=1e-5)
    for stream in streams:
        assert 0 < stream.stats.first_chunk_s <= stream.stats.generation_s
        assert stream.stats.audio_s == pytest.approx(0.6, abs=1e-3)


def _seeded_requests_share_a_batch(generator) -> None:
    """An unseeded request and two seeded ones (one prompt, two seeds) run as one batch, and each stream is
    what its prompt and reported seed make alone. The generator spells its codes out as audio
    (tests/support/code_audio.py), so equal audio means equal tokens."""
    requests = [("company", None), ("seeded", 11), ("seeded", 12)]

    async def body(engine):
        streams = [engine.submit(prompt, GenerationParams(duration=0.5, seed=seed)) for prompt, seed in requests]
        return streams, await asyncio.gather(*(stream.audio() for stream in streams))

    streams, clips = _run(lambda: GenerationEngine(generator, batch_window_s=0.5), body)
    assert [stream.stats.batch_size for stream in streams] == [3, 3, 3]
    assert [stream.stats.seed for stream in streams][1:] == [11, 12] and streams[0].stats.seed is not None
    for (prompt, _), stream, clip in zip(requests, streams, clips, strict=True):
        alone = generator.generate([prompt], GenerationParams(duration=0.5, seed=stream.stats.seed))
        np.testing.assert_allclose(clip, alone.audio[0], atol=1e-5)
    assert np.abs(clips[1] - clips[2]).max() > 1e-2  # one prompt, two seeds: two clips


def test_seeded_requests_share_a_batch_and_each_makes_what_it_makes_alone(micro_dir):
    _seeded_requests_share_a_batch(spell_codes(MusicGenerator.load(micro_dir)))


def test_seeded_requests_share_a_batch_on_the_onnx_backend(micro_export):
    # The ONNX graphs batch only at the start (every row at one position): the same promise holds there.
    onnx = spell_codes(OnnxMusicGenerator.load(micro_export.out_dir, threads=1))
    assert not onnx.joins_running_batches
    _seeded_requests_share_a_batch(onnx)


def test_a_seeded_request_arriving_mid_batch_joins_it_and_draws_what_it_draws_alone(micro_dir, slow_steps):
    params = GenerationParams(duration=0.4, seed=5)
    generator = spell_codes(MusicGenerator.load(micro_dir))

    async def body(engine):
        first = engine.submit("drums and bass", GenerationParams(duration=1.0))
        first_audio = asyncio.ensure_future(first.audio())
        while first.stats.first_chunk_s is None:
            await asyncio.sleep(0.005)
        late = engine.submit("a slow waltz", params)
        late_audio = await late.audio()
        await first_audio
        return late, late_audio, engine.joined

    late, late_audio, joined = _run(lambda: GenerationEngine(generator), body)
    assert joined == 1 and late.stats.batch_size == 2 and late.stats.seed == 5
    np.testing.assert_allclose(late_audio, generator.generate(["a slow waltz"], params).audio[0], atol=1e-5)


def test_cancelling_the_only_stream_stops_its_generation(micro):
    async def body(engine):
        stream = engine.submit("long", GenerationParams(duration=15.0))
        received = 0
        async for chunk in stream:
            received += chunk.size
            stream.cancel()
            break
        for _ in range(200):  # the worker notices at its next decoding step
            if engine.active == 0:
                break
            await asyncio.sleep(0.05)
        follow = await engine.submit("next", GenerationParams(duration=0.3, seed=1)).audio()
        return received, engine.active, follow, stream.stats

    received, active, follow, stats = _run(lambda: GenerationEngine(micro), body)
    assert received > 0 and active == 0
    assert stats.audio_s < 15.0  # it stopped well before the end
    assert follow.size == round(0.3 * micro.sample_rate)


def test_a_full_queue_refuses_at_once_and_bad_parameters_are_named(micro):
    async def body(engine):
        first = engine.submit("busy", GenerationParams(duration=2.0, seed=1))
        await asyncio.sleep(0.2)  # the worker takes it: the queue is empty again
        # other settings than the running request's: they cannot join it, so they wait in the queue
        queued = [engine.submit("wait", GenerationParams(duration=0.3, guidance_scale=1.5)) for _ in range(2)]
        with pytest.raises(EngineBusy, match="2 requests are waiting"):
            engine.submit("one too many", GenerationParams(duration=0.3))
        with pytest.raises(ModelInputError, match="guidance scale"):
            engine.submit("bad", GenerationParams(guidance_scale=0.5))
        for stream in [first, *queued]:
            await stream.audio()
        return engine.queued

    assert _run(lambda: GenerationEngine(micro, max_queue=2), body) == 0
