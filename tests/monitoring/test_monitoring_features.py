"""Monitoring's features: prompt statistics (with the tempo and key a prompt names), the text encoder and the prompt
projection, and the audio columns of one clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.corpus.captions import write_caption
from model.audio_quality import FEATURES, audio_features
from model.errors import ModelInputError
from model.music_features import key_name
from monitoring.features import (
    PromptProjection,
    TextEncoder,
    audio_row,
    frames_from_bytes,
    prompt_columns,
    prompt_statistics,
)
from monitoring.schema import AUDIO_COLUMNS, AUDIO_WINDOW_S, MEL_FRAMES, PROMPT_COLUMNS, PROMPT_EMBEDDING_COMPONENTS


@pytest.mark.unit
@pytest.mark.parametrize(
    ("prompt", "tempo", "key"),
    [
        ("Calm jazz tune in D minor at 92 BPM with piano.", 92.0, "D minor"),
        ("F# major, 120bpm", 120.0, "F-sharp major"),
        ("an upbeat B-flat major song, 140-bpm", 140.0, "B-flat major"),
        ("Eb minor ballad at 66.5 beats per minute", 66.5, "E-flat minor"),
        ("C sharp minor drone", None, "C-sharp minor"),
        ("Cb major is B major", None, "B major"),  # C-flat is B, spelt as key_name spells it
        ("a minor change of plan, 5 bpm, 9000 BPM", None, None),  # lower-case "a" is an article; tempi out of range
        ("", None, None),
    ],
)
def test_prompt_statistics_find_the_tempo_and_key_a_prompt_names(prompt, tempo, key):
    stats = prompt_statistics(prompt)
    assert stats["prompt_tempo_bpm"] == tempo and stats["prompt_key"] == key
    assert set(stats) | {f"prompt_embedding_{i}" for i in range(PROMPT_EMBEDDING_COMPONENTS)} == set(PROMPT_COLUMNS)


@pytest.mark.unit
def test_every_caption_template_gives_back_its_tempo_and_key():
    labels = {"genre": "jazz", "mood": "calm", "tempo": 97.0, "instruments": ["piano", "bass"], "drums": "brushes"}
    for root, mode in [(1, "minor"), (10, "major"), (6, "major"), (0, "minor")]:
        for seed in range(24):  # enough draws to hit all six templates
            caption = write_caption({**labels, "key": key_name(root, mode)}, np.random.default_rng(seed))
            stats = prompt_statistics(caption)
            assert stats["prompt_tempo_bpm"] == 97.0 and stats["prompt_key"] == key_name(root, mode), caption


@pytest.mark.unit
def test_text_statistics_count_characters_words_and_shares():
    stats = prompt_statistics("Lo-fi HIP hop 90")
    assert stats["prompt_chars"] == 16 and stats["prompt_words"] == 4
    assert stats["prompt_digit_share"] == pytest.approx(2 / 16)
    assert stats["prompt_upper_share"] == pytest.approx(4 / 10)  # L, H, I, P of 10 cased letters
    japanese = prompt_statistics("穏やかなピアノ曲、ゆっくりとした雨の夜")
    assert japanese["prompt_non_ascii_share"] > 0.5 and japanese["prompt_upper_share"] == 0.0
    empty = prompt_statistics("")
    assert empty["prompt_chars"] == empty["prompt_words"] == 0 and empty["prompt_digit_share"] == 0.0


@pytest.mark.unit
def test_projection_round_trips_through_a_file_and_pads_missing_components(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(20, 12))
    projection = PromptProjection.fit(embeddings)
    coordinates = projection.project(embeddings)
    assert coordinates.shape == (20, PROMPT_EMBEDDING_COMPONENTS)
    assert np.allclose(coordinates.mean(axis=0), 0.0) and np.all(np.diff(coordinates.var(axis=0)) <= 1e-12)
    loaded = PromptProjection.load(projection.save(tmp_path / "projection.npz"))
    # The same rows through the saved and the fitted projection: exactly equal. (Against `coordinates`, projected
    # as 20 rows, BLAS may round the last bit differently for a 3-row product.)
    np.testing.assert_array_equal(loaded.project(embeddings[:3]), projection.project(embeddings[:3]))
    np.testing.assert_allclose(loaded.project(embeddings[:3]), coordinates[:3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(PromptProjection.fit(embeddings).project(embeddings), coordinates)  # signs fixed
    few = PromptProjection.fit(embeddings[:3])  # rank 2 after centring: two components, two zero columns
    assert np.all(few.project(embeddings)[:, 2:] == 0) and np.any(few.project(embeddings)[:, :2] != 0)
    with pytest.raises(ModelInputError, match="fitted on 12-d"):
        projection.project(rng.normal(size=(2, 5)))


@pytest.mark.integration
def test_the_text_encoder_of_a_model_directory_is_the_models_own(micro, micro_dir):
    encoder = TextEncoder.from_model_dir(micro_dir)
    prompts = ["jazz", "a much longer prompt about calm piano in D minor at 70 BPM", ""]
    embeddings = encoder.embed(prompts)
    assert embeddings.shape == (3, micro.model.config.text_encoder.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # Padding in a batch changes nothing (the silent bug DESIGN.md warns of would).
    np.testing.assert_allclose(encoder.embed(["jazz"])[0], embeddings[0], atol=1e-5)
    tokens = micro.processor.tokenizer(prompts[:1], return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode():
        states = micro.model.text_encoder(**tokens).last_hidden_state[0].mean(dim=0).numpy()
    np.testing.assert_allclose(embeddings[0], states / np.linalg.norm(states), atol=1e-5)
    # The micro model's encoder is the bundled MiniLM, frozen: loading it by name gives the same space.
    np.testing.assert_allclose(TextEncoder.from_pretrained("minilm").embed(prompts), embeddings, atol=1e-5)

    rows = prompt_columns(prompts, PromptProjection.fit(embeddings), encoder)
    assert all(set(row) == set(PROMPT_COLUMNS) for row in rows)
    assert all(row["prompt_embedding_0"] is not None for row in rows)
    assert all(row["prompt_embedding_0"] is None for row in prompt_columns(prompts, None, None))


def chord(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in (293.66, 349.23, 440.0)).astype(np.float32)  # D minor


@pytest.mark.unit
def test_audio_row_holds_the_features_the_key_and_a_sample_of_mel_frames():
    row = audio_row(chord(2.5, 32000), 32000)
    assert set(row) == set(AUDIO_COLUMNS)
    assert row["duration_s"] == pytest.approx(2.5) and row["silence_share"] == 0.0
    assert isinstance(row["audio_key"], str) and row["audio_key"].endswith(("major", "minor"))
    frames = frames_from_bytes(row["mel_frames"])
    assert frames.shape == (MEL_FRAMES, 64) and frames.dtype == np.float32 and np.all(np.isfinite(frames))

    short = frames_from_bytes(audio_row(chord(0.1, 16000), 16000)["mel_frames"])
    assert short.shape == (8, 64)  # 1 + (1600 - 400) // 160 frames: fewer than MEL_FRAMES, all kept

    silent = audio_row(np.zeros(3 * 16000, dtype=np.float32), 16000)
    assert silent["audio_key"] is None and silent["silence_share"] == 1.0
    tiny = audio_row(chord(0.01, 16000), 16000)  # shorter than one 25 ms mel frame
    assert tiny["mel_frames"] is None and frames_from_bytes(tiny["mel_frames"]).shape == (0, 64)
    assert set(FEATURES) <= set(tiny)


@pytest.mark.unit
def test_audio_features_describe_the_opening_window_whatever_the_clip_length():
    rng = np.random.default_rng(3)
    clip = chord(10.0, 16000)
    opening = int(AUDIO_WINDOW_S * 16000)
    clip[opening:] = 0.3 * rng.standard_normal(clip.size - opening)  # noise after the opening: brighter as a whole
    long, start = audio_row(clip, 16000), audio_row(clip[:opening], 16000)
    assert long["duration_s"] == pytest.approx(10.0) and start["duration_s"] == pytest.approx(AUDIO_WINDOW_S)
    for name in set(FEATURES) - {"duration_s"}:
        assert long[name] == pytest.approx(start[name], nan_ok=True), name
    whole = audio_features(clip, 16000)["spectral_centroid_hz"]
    assert long["spectral_centroid_hz"] < whole - 1000  # the noise after the opening is not in it

    short = audio_row(clip[:16000], 16000)  # shorter than the window: nothing to compare like with like
    assert short["duration_s"] == pytest.approx(1.0) and short["audio_key"] is not None
    assert all(short[name] is None for name in set(FEATURES) - {"duration_s"})
    assert frames_from_bytes(short["mel_frames"]).shape == (MEL_FRAMES, 64)


@pytest.mark.integration
def test_an_onnx_exports_text_encoder_embeds_like_the_torch_one(micro, micro_dir, tmp_path):
    import shutil

    from components.export import TEXT_ENCODER, export_graph, graph_specs

    # An export folder as the export stage lays it out, holding only the text encoder's graph.
    example = micro.processor.tokenizer(
        ["calm piano", "a longer prompt about jazz"], padding=True, return_tensors="pt", return_token_type_ids=False
    )
    spec = graph_specs(micro.model, example["input_ids"], example["attention_mask"])[TEXT_ENCODER]
    export_graph(TEXT_ENCODER, spec, tmp_path / "text_encoder.onnx", 20)
    for path in micro_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy2(path, tmp_path / path.name)
    prompts = ["jazz", "a much longer prompt about calm piano in D minor", ""]
    np.testing.assert_allclose(
        TextEncoder.from_model_dir(tmp_path).embed(prompts),
        TextEncoder.from_model_dir(micro_dir).embed(prompts),
        atol=1e-5,
    )
