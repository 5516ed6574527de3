"""The ONNX Runtime backend runs the same generation loop as torch and gives the same tokens.

Greedy and seeded sampling agree token for token: ONNX Runtime's logits differ from torch's by ~1e-7,
and with top-k at or above the vocabulary (the micro model's 64 codes under MusicGen's default 250) a
sample is drawn over the vocabulary in index order, so it changes only if a uniform draw lands within
1e-7 of a bucket edge. With top-k below the vocabulary, candidates are sorted: two logits within 1e-7 of
each other may swap places and shift which token a draw selects, so equality there is likely, not
guaranteed.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from model import GenerationParams, ModelInputError
from model.loader import load_generator
from model.onnx_backend import GRAPHS, OnnxDecoder, OnnxMusicGenerator, OrtRunner
from tests.support.recording_runner import RecordingRunner

pytestmark = pytest.mark.integration

PROMPTS = ["upbeat jazz with saxophone and brushed drums", "ambient", ""]


@pytest.fixture(scope="module")
def folder(micro_export):
    return micro_export.out_dir


@pytest.fixture(scope="module")
def onnx_gen(folder) -> OnnxMusicGenerator:
    return OnnxMusicGenerator.load(folder, threads=1)


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(duration=0.5, temperature=0.0, guidance_scale=3.0),
        GenerationParams(duration=0.5, temperature=0.0, guidance_scale=1.0),
        GenerationParams(duration=0.5, seed=7),
        GenerationParams(duration=2.3, seed=3),  # long-form: four windows of the 1 s context
        GenerationParams(duration=0.3, num_beams=2),
    ],
    ids=["greedy-guided", "greedy-unguided", "sampled", "long-form", "beams"],
)
def test_same_tokens_and_audio_as_torch(micro, onnx_gen, params):
    theirs = micro.generate(PROMPTS, params)
    ours = onnx_gen.generate(PROMPTS, params)
    assert torch.equal(ours.codes, theirs.codes)
    assert ours.audio.shape == theirs.audio.shape
    assert np.max(np.abs(ours.audio - theirs.audio)) <= 1e-5


def test_each_prompt_of_a_batch_draws_with_its_own_seed(onnx_gen):
    # What a row draws comes from its seed alone: row i of a seeded batch is its prompt alone with seed + i,
    # and a prompt keeps its tokens beside another seed of itself, which draws others.
    params = GenerationParams(duration=0.5)
    batch = onnx_gen.generate(PROMPTS, GenerationParams(duration=0.5, seed=7))
    assert batch.seeds == [7, 8, 9]
    for row, prompt in enumerate(PROMPTS):
        assert torch.equal(batch.codes[row], onnx_gen.generate([prompt], params, seeds=[7 + row]).codes[0]), prompt
    twins = onnx_gen.generate([PROMPTS[1], PROMPTS[0], PROMPTS[1]], params, seeds=[8, 3, 4])
    assert torch.equal(twins.codes[0], batch.codes[1]) and not torch.equal(twins.codes[0], twins.codes[2])


def test_text_states_and_first_logits_match_torch(micro, onnx_gen):
    # the backends hold the text differently (torch: projected; ONNX: raw, the graph projects it), so
    # compare what the decoder makes of it
    special = micro.model.decoder.config.vocab_size
    tokens = torch.full((len(PROMPTS), micro.num_codebooks, 1), special)
    logits = []
    for gen in (micro, onnx_gen):
        text = gen.encode_text(PROMPTS)
        assert text.mask[2].sum() == 0 and not text.states[2].any()
        with torch.inference_mode():
            gen.decoder.start(text.states, text.mask, capacity=1)
            logits.append(gen.decoder.step(tokens))
    assert torch.allclose(logits[0], logits[1], atol=1e-5)


def test_streamed_chunks_concatenate_to_the_whole(onnx_gen):
    params = GenerationParams(duration=1.2, seed=5)
    whole = onnx_gen.generate(["techno"], params).audio
    chunks = list(onnx_gen.stream(["techno"], params))
    assert len(chunks) >= 2
    streamed = np.concatenate(chunks, axis=1)
    assert streamed.shape == whole.shape
    assert np.max(np.abs(streamed - whole)) <= 1e-3 * np.max(np.abs(whole))


def test_continuation_from_codes_matches_torch_and_audio_prompts_are_refused(micro, onnx_gen):
    params = GenerationParams(duration=0.4, temperature=0.0)
    prefix = micro.generate(["bossa nova"], GenerationParams(duration=0.3, seed=1)).codes
    ours = torch.cat(list(onnx_gen.iter_frames(["bossa nova"], params, prefix)), dim=2)
    theirs = torch.cat(list(micro.iter_frames(["bossa nova"], params, prefix)), dim=2)
    assert torch.equal(ours, theirs)
    with pytest.raises(ModelInputError, match="codec encoder"):
        onnx_gen.generate(["a"], params, audio_prompt=np.zeros((1, 3200), dtype=np.float32))


def test_the_generator_only_talks_to_its_runner(folder):
    runner = RecordingRunner(OrtRunner(folder, threads=1))
    gen = OnnxMusicGenerator.load(folder, runner=runner)
    gen.generate(["a"], GenerationParams(duration=0.2, seed=0))
    assert set(runner.calls) == set(GRAPHS)
    assert runner.calls.count("decoder_model") == 1  # one prefill, then cached steps


def test_cached_steps_append_to_shared_buffers_and_match_decoder_with_past(folder, onnx_gen):
    text = onnx_gen.encode_text(PROMPTS)
    states, mask = text.rows(3.0)
    tokens = torch.randint(
        0, 64, (states.shape[0], onnx_gen.num_codebooks, 6), generator=torch.Generator().manual_seed(0)
    )
    in_place, copying = (
        OnnxDecoder(onnx_gen.runner, onnx_gen.config.decoder),
        OnnxDecoder(RecordingRunner(onnx_gen.runner), onnx_gen.config.decoder),
    )
    assert in_place.in_place and not copying.in_place
    logits, after_prefill = {}, {}
    for decoder in (in_place, copying):
        decoder.start(states, mask, capacity=8)
        logits[decoder] = [decoder.step(tokens[:, :, :2])]
        after_prefill[decoder] = list(decoder.cache)
        logits[decoder] += [decoder.step(tokens[:, :, t : t + 1]) for t in range(2, 6)]
    # the in-place decoder kept its buffers (capacity 8, 6 positions written); the other grew new arrays
    assert all(now is then for now, then in zip(in_place.cache, after_prefill[in_place], strict=True))
    assert copying.cache[0] is not after_prefill[copying][0]
    assert (
        in_place.cache[0].shape[2] == 8 and in_place.cache[0][:, :, 5].any() and not in_place.cache[0][:, :, 6:].any()
    )
    assert copying.cache[0].shape[2] == 6
    for ours, theirs in zip(logits[in_place], logits[copying], strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_an_export_without_the_shared_cache_graph_steps_through_decoder_with_past(micro, folder, tmp_path):
    # exports written before decoder_with_shared_cache existed (or trimmed to Optimum's four) still generate
    target = tmp_path / "optimum-only"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("int8", "decoder_with_shared_cache.onnx*"))
    gen = OnnxMusicGenerator.load(target, threads=1)
    assert not gen.decoder.in_place
    params = GenerationParams(duration=0.3, temperature=0.0)
    assert torch.equal(gen.generate(PROMPTS, params).codes, micro.generate(PROMPTS, params).codes)


def test_int8_generates_finite_audio_and_its_logits_stay_near_fp32(folder, onnx_gen):
    int8 = load_generator(folder / "int8", backend="onnx", threads=1)
    result = int8.generate(PROMPTS, GenerationParams(duration=0.7, seed=2))
    assert result.audio.shape == (len(PROMPTS), round(0.7 * int8.sample_rate))
    assert np.isfinite(result.audio).all()
    # logits of the same guided rows and tokens, fp32 vs int8
    text = onnx_gen.encode_text(PROMPTS)
    states, mask = text.rows(3.0)
    codes = result.codes
    tokens = torch.cat([codes, codes])
    logits = []
    for runner in (onnx_gen.runner, int8.runner):
        decoder = OnnxDecoder(runner, onnx_gen.config.decoder)
        decoder.start(states, mask, capacity=tokens.shape[2])
        logits.append(torch.stack([decoder.step(tokens[:, :, t : t + 1]) for t in range(tokens.shape[2])]))
    difference = (logits[0] - logits[1]).abs().max().item()
    scale = logits[0].abs().max().item()
    print(f"int8 vs fp32 logits: max |diff| {difference:.3g} at scale {scale:.3g}")
    assert difference / max(1.0, scale) < 0.15


@pytest.mark.parametrize("case", ["missing", "no graphs", "truncated graph"])
def test_a_bad_folder_is_named(folder, tmp_path, case):
    target = tmp_path / "onnx"
    if case != "missing":
        target.mkdir()
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            (target / name).write_bytes((folder / name).read_bytes())
        (target / "processor_config.json").write_bytes((folder / "processor_config.json").read_bytes())
    if case == "truncated graph":
        for graph in GRAPHS:
            (target / f"{graph}.onnx").write_bytes((folder / f"{graph}.onnx").read_bytes()[:1000])
    message = {"missing": "does not exist", "no graphs": "is not an ONNX export", "truncated graph": "cannot load"}
    with pytest.raises(ModelInputError, match=message[case]):
        load_generator(target, backend="onnx")


def test_unknown_backend():
    with pytest.raises(ModelInputError, match=r"backend must be one of auto, torch, onnx, got 'tensorrt'"):
        load_generator("micro", backend="tensorrt")
