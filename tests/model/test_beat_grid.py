"""The beat grid: the tempo read from prompts, the phase features, how a grid is saved and loaded, and
that every decoding path (one batch, beams, continuous batching, training, the ONNX graphs) adds the same grid."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
from safetensors.torch import load_file

from components.train import train
from model import MusicGenerator
from model.beat_grid import (
    FEATURES,
    FILE,
    ONNX_FILE,
    ONNX_INPUT,
    attach_beat_grid,
    grid_features,
    grid_in_forward,
    prompt_tempo,
    read_onnx_note,
)
from model.decoder_step import CachedDecoder
from model.errors import ModelInputError
from model.generation_params import GenerationParams
from model.onnx_backend import OnnxMusicGenerator, OrtRunner
from settings.params import TrainParams
from tests.conftest import MICRO, save_with_grid
from tests.support.micro_pipeline import MICRO_TRAIN, micro_tokens
from tests.support.recording_runner import RecordingRunner

TEMPO_PROMPT = "upbeat rock at 120 BPM with drums"


@pytest.mark.parametrize(
    ("prompt", "tempo"),
    [
        ("Calm jazz at 96 BPM in D minor.", 96.0),
        ("techno, 128bpm", 128.0),
        ("lofi (85.5 bpm), 85.5 BPM again", 85.5),
        ("rock at 120 BPM over a 90 BPM groove", 0.0),  # two different tempi: none is trusted
        ("ambient pads, slow", 0.0),
        ("a 1200 BPM blast", 0.0),  # out of range
        ("", 0.0),
    ],
)
def test_prompt_tempo(prompt, tempo):
    assert prompt_tempo(prompt) == tempo


def test_features_follow_the_beat_and_the_bar():
    rate, bpm = 50.0, 120.0  # a beat every 25 frames, a bar every 100
    features = grid_features(torch.tensor([bpm, 0.0]), 0, 201, rate)
    assert features.shape == (2, 201, 6)
    assert features[1].abs().max() == 0  # no tempo, no grid
    beat_sin, beat_cos, bar_sin, bar_cos = features[0, :, 2], features[0, :, 3], features[0, :, 4], features[0, :, 5]
    for beat in range(8):
        assert beat_cos[25 * beat] == pytest.approx(1.0, abs=1e-6)
        assert beat_sin[25 * beat] == pytest.approx(0.0, abs=1e-5)
    assert bar_cos[100] == pytest.approx(1.0, abs=1e-6) and bar_cos[50] == pytest.approx(-1.0, abs=1e-6)
    assert beat_cos[12] < 0 and bar_sin[25] == pytest.approx(1.0, abs=1e-6)
    # A window that starts later continues the same grid.
    later = grid_features(torch.tensor([bpm]), torch.tensor([37]), 20, rate)
    torch.testing.assert_close(later[0], features[0, 37:57])
    assert math.isclose(float(features[0, :, :2].pow(2).sum(-1).mean()), 1.0, rel_tol=1e-6)


def _with_grid(micro, tmp_path) -> MusicGenerator:
    """The micro model with a random (non-zero) beat grid, saved and loaded back; `micro` is left alone."""
    return MusicGenerator.load(save_with_grid(micro, tmp_path / "grid"))


def test_a_grid_is_saved_beside_a_plain_musicgen_and_loads_back(micro, tmp_path):
    gridded = _with_grid(micro, tmp_path)
    assert (tmp_path / "grid" / FILE).is_file()
    assert not any("beat" in name for name in load_file(tmp_path / "grid" / "model.safetensors"))
    assert gridded.model.decoder.beat_grid.frame_rate == micro.frame_rate
    assert not hasattr(micro.model.decoder, "beat_grid")  # the fixture's model is left as it was
    (tmp_path / "grid" / FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelInputError, match="cannot read the beat grid"):
        MusicGenerator.load(tmp_path / "grid")


def test_a_grid_of_another_size_is_named(micro, tmp_path):
    _with_grid(micro, tmp_path)
    from safetensors.torch import save_file

    save_file({"proj.weight": torch.zeros(7, 6)}, tmp_path / "grid" / FILE, metadata={"frame_rate": "50.0"})
    with pytest.raises(ModelInputError, match="not a beat grid for this decoder"):
        MusicGenerator.load(tmp_path / "grid")


def test_the_grid_changes_prompts_with_a_tempo_and_only_those(micro, tmp_path):
    gridded = _with_grid(micro, tmp_path)
    params = GenerationParams(duration=0.4, seed=3)
    plain = {p: micro.generate([p], params).codes for p in (TEMPO_PROMPT, "upbeat rock with drums")}
    assert not torch.equal(gridded.generate([TEMPO_PROMPT], params).codes, plain[TEMPO_PROMPT])
    assert torch.equal(gridded.generate(["upbeat rock with drums"], params).codes, plain["upbeat rock with drums"])
    beams = GenerationParams(duration=0.2, num_beams=2)  # beam search reorders the grid with the cache
    assert not torch.equal(gridded.generate([TEMPO_PROMPT], beams).codes, micro.generate([TEMPO_PROMPT], beams).codes)
    # A fresh grid starts at zero: exactly no grid until trained.
    attach_beat_grid(micro.model.decoder, micro.frame_rate)
    try:
        assert torch.equal(micro.generate([TEMPO_PROMPT], params).codes, plain[TEMPO_PROMPT])
    finally:
        del micro.model.decoder.beat_grid


@torch.inference_mode()
def test_every_decoding_path_adds_the_same_grid(micro, tmp_path):
    gridded = _with_grid(micro, tmp_path)
    text = gridded.encode_text([TEMPO_PROMPT])
    assert text.tempi.tolist() == [120.0]
    states, mask, tempi = *text.rows(3.0), text.row_tempi(3.0)
    assert tempi.tolist() == [120.0, 0.0]  # guidance's unconditional row has no grid
    tokens = torch.randint(0, 64, (12, 4, 1), generator=torch.Generator().manual_seed(0))
    whole = CachedDecoder(gridded.model.decoder)
    whole.start(states, mask, capacity=12, tempi=tempi)
    expected = [whole.step(t.expand(2, -1, -1)) for t in tokens]
    rows = gridded.row_decoder(16)
    rows.add(states, mask, tempi)
    got = [rows.step(t.expand(2, -1, -1)) for t in tokens]
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    # Training's teacher-forced forward (transformers' own decoder) sees what generation sees, here for a
    # crop that starts at frame 5 of its clip.
    later = CachedDecoder(gridded.model.decoder)
    later.start(states, mask, capacity=12, tempi=tempi, first_frame=5)
    stepped = torch.stack([later.step(t.expand(2, -1, -1)) for t in tokens], dim=2)
    ids = tokens.permute(2, 1, 0).expand(2, -1, -1).reshape(8, 12)
    with grid_in_forward(gridded.model.decoder, tempi, 5, 12):
        forced = gridded.model.decoder(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=mask)
    torch.testing.assert_close(forced.logits.reshape(2, 4, 12, -1), stepped, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stepped[:, :, 1:], torch.stack(expected, dim=2)[:, :, 1:], atol=1e-3)
    ungridded = CachedDecoder(gridded.model.decoder)
    ungridded.start(states, mask, capacity=12)
    assert not torch.allclose(ungridded.step(tokens[0].expand(2, -1, -1)), expected[0])


def test_training_with_a_grid_learns_and_saves_it(tmp_path_factory):
    codec, token_dir = micro_tokens(tmp_path_factory.mktemp("grid-tokens"))
    out = tmp_path_factory.mktemp("grid-run")
    params = TrainParams(**{**MICRO_TRAIN, "steps": 6, "beat_grid": True})
    train(token_dir, codec, out / "train", out / "model", params, preset=MICRO, show_progress=False)
    weight = load_file(out / "model" / FILE)["proj.weight"]
    assert weight.abs().max() > 0  # trained away from its zero start
    generator = MusicGenerator.load(out / "model")
    assert generator.model.decoder.beat_grid.frame_rate == generator.frame_rate
    assert generator.generate([TEMPO_PROMPT], GenerationParams(duration=0.2, seed=0)).audio.shape == (1, 6400)


@pytest.mark.integration
def test_the_onnx_export_carries_the_grid(micro_grid_export):
    folder = micro_grid_export.out_dir
    for stem in ("decoder_model", "decoder_with_past_model", "decoder_with_shared_cache"):
        inputs = {value.name: value for value in onnx.load(str(folder / f"{stem}.onnx")).graph.input}
        dims = [d.dim_param or d.dim_value for d in inputs[ONNX_INPUT].type.tensor_type.shape.dim]
        assert dims[0] == "total_batch_size" and dims[2] == FEATURES, (stem, dims)
    assert ONNX_INPUT not in {value.name for value in onnx.load(str(folder / "text_encoder.onnx")).graph.input}
    # The parity prompts include a tempo: every graph matched torch with the grid's rows in the batch.
    for parity in (micro_grid_export.parity, micro_grid_export.int8_parity):
        assert all(graph.passed for graph in parity.values())
    for variant in (folder, folder / "int8"):
        assert read_onnx_note(variant) == MusicGenerator.load(folder.parent / "model").frame_rate
        assert not (variant / FILE).exists()  # the weights are inside the graphs


@pytest.mark.integration
@pytest.mark.parametrize("path", ["shared cache", "with past"])
def test_onnx_runtime_decodes_the_grid_as_torch_does(micro_grid_export, micro, path):
    """Token for token, across long-form windows (which start the grid at a later frame) and beams."""
    folder = micro_grid_export.out_dir
    gridded = MusicGenerator.load(folder.parent / "model")
    runner = OrtRunner(folder, threads=1)
    onnx_gen = OnnxMusicGenerator.load(folder, runner=runner if path == "shared cache" else RecordingRunner(runner))
    assert onnx_gen.decoder.in_place == (path == "shared cache")
    for params in (GenerationParams(duration=2.3, seed=3), GenerationParams(duration=0.3, num_beams=2)):
        expected = gridded.generate([TEMPO_PROMPT, "ambient"], params).codes
        assert torch.equal(onnx_gen.generate([TEMPO_PROMPT, "ambient"], params).codes, expected)
        assert not torch.equal(micro.generate([TEMPO_PROMPT], params).codes, expected[:1])


def test_a_bad_onnx_note_is_named(tmp_path):
    assert read_onnx_note(tmp_path) is None
    for text, message in [("{", "not a beat grid note"), ('{"frame_rate": -1}', "not a positive number")]:
        (tmp_path / ONNX_FILE).write_text(text)
        with pytest.raises(ModelInputError, match=message):
            read_onnx_note(tmp_path)
