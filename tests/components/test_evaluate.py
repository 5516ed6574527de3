"""The evaluation stage: gate decisions on crafted metrics, the label classifier, and a whole micro run
whose report must hold every metric."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import markupsafe
import numpy as np
import pytest

from components.evaluate import EvaluateError, _continuations, evaluate
from components.evaluation.adherence import ADHERENCE, continuation_adherence, tempo_error
from components.evaluation.classifier import LabelClassifier, kl_divergence
from components.evaluation.gate import RATIO, GateError, decide, promote
from components.evaluation.significance import paired_gain
from components.prepare import prepare
from model.audio_quality import FEATURES
from settings.params import EvaluateParams, ParamsError
from tests.support.micro_pipeline import MICRO_DATA


def crafted(fad_model=1.0, fad_untrained=2.0, tempo=0.5, key=0.3, accuracy=0.4, settings="s1", spread=0.0) -> dict:
    """Metrics as the evaluation writes them; each bound `spread` away from its estimate."""
    three = lambda value: {"model": value, "untrained": 0.0, "real": 1.0}  # noqa: E731
    adherence = {"tempo_match": tempo, "key_score": key, "label_accuracy": accuracy}
    ratio = fad_model / fad_untrained
    return {
        "fad": {"mel": {"model": fad_model, "untrained": fad_untrained, "real": 0.1}},
        "adherence": {name: three(value) for name, value in adherence.items()},
        "intervals": {
            "fad": {"mel": {RATIO: {"low": ratio - spread, "high": ratio + spread}}},
            "adherence": {
                name: {"model": {"mean": value, "low": value - spread, "high": value + spread}}
                for name, value in adherence.items()
            },
        },
        "settings": settings,
    }


GATE = EvaluateParams(max_fad_ratio=0.9, min_tempo_match=0.2, min_key_score=0.2, min_label_accuracy=0.2)


@pytest.mark.unit
def test_gate_passes_a_model_that_meets_every_threshold():
    decision = decide(crafted(), GATE)
    assert decision.promote
    assert {c.name for c in decision.checks} == {"fad.mel", "tempo_match", "key_score", "label_accuracy"}
    assert decision.notes == ["no promoted model to compare with"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("metrics", "failing"),
    [
        (crafted(fad_model=1.9), "fad.mel"),  # 1.9 > 0.9 x 2.0
        (crafted(tempo=0.1), "tempo_match"),
        (crafted(key=0.1), "key_score"),
        (crafted(accuracy=0.05), "label_accuracy"),
    ],
)
def test_gate_refuses_each_threshold_it_is_given(metrics, failing):
    decision = decide(metrics, GATE)
    assert not decision.promote
    assert [c.name for c in decision.checks if not c.passed] == [failing]


@pytest.mark.unit
def test_a_threshold_holds_only_when_its_bound_clears_it():
    # Every estimate clears its threshold (FAD share 0.5 <= 0.9, shares >= 0.2); only the bounds differ.
    tight, loose = decide(crafted(spread=0.05), GATE), decide(crafted(spread=0.45), GATE)
    assert tight.promote and not loose.promote
    assert {c.name for c in loose.checks if not c.passed} == {"fad.mel", "tempo_match", "key_score", "label_accuracy"}
    fad, key = loose.checks[0], next(c for c in loose.checks if c.name == "key_score")
    assert (fad.value, fad.estimate, fad.threshold) == (pytest.approx(0.95), pytest.approx(0.5), 0.9)
    assert (key.value, key.estimate) == (pytest.approx(-0.15), pytest.approx(0.3)) and "lower 95% bound" in key.rule
    # Metrics without bounds (an evaluation older than the bounds) cannot be gated: said, not guessed.
    bare = crafted()
    del bare["intervals"]
    with pytest.raises(GateError, match=r"intervals\.fad\.mel.*evaluate again"):
        decide(bare, GATE)


@pytest.mark.unit
def test_a_null_threshold_is_not_checked():
    params = EvaluateParams(max_fad_ratio=None, min_tempo_match=None, min_key_score=None, min_label_accuracy=None)
    decision = decide(crafted(fad_model=5.0, tempo=0.0), params)
    assert decision.promote and decision.checks == []


@pytest.mark.unit
def test_gate_refuses_a_regression_against_the_promoted_model(tmp_path):
    promoted = tmp_path / "promoted"
    promoted.mkdir()
    (promoted / "metrics.json").write_text(json.dumps(crafted(fad_model=1.0, tempo=0.6)))
    within = decide(crafted(fad_model=1.05, tempo=0.55), GATE, promoted)  # within the 0.1 tolerance
    assert within.promote and within.compared_with == str(promoted)
    worse = decide(crafted(fad_model=1.2, tempo=0.4), GATE, promoted)
    assert not worse.promote
    assert {c.name for c in worse.checks if not c.passed} == {"regression.fad.mel", "regression.tempo_match"}
    # Other prompts or settings: not comparable, so not compared (and said so).
    other = decide(crafted(fad_model=1.2, tempo=0.4, settings="s2"), GATE, promoted)
    assert other.promote and other.compared_with is None and "other settings" in other.notes[0]


@pytest.mark.unit
def test_promote_copies_a_passed_model_and_refuses_a_refused_one(tmp_path):
    model, evaluation = tmp_path / "model", tmp_path / "evaluation"
    model.mkdir()
    evaluation.mkdir()
    (model / "config.json").write_text("{}")
    (evaluation / "metrics.json").write_text(json.dumps(crafted()))
    decision = decide(crafted(tempo=0.0), GATE)
    (evaluation / "decision.json").write_text(json.dumps(decision.to_json()))
    with pytest.raises(GateError, match=r"tempo_match >= 0\.2"):
        promote(model, evaluation, tmp_path / "promoted")
    assert not (tmp_path / "promoted").exists()
    (evaluation / "decision.json").write_text(json.dumps(decide(crafted(), GATE).to_json()))
    promoted = promote(model, evaluation, tmp_path / "promoted")
    assert (promoted / "model" / "config.json").is_file() and (promoted / "metrics.json").is_file()


@pytest.mark.unit
def test_kl_divergence_is_zero_for_equal_distributions_and_grows_with_difference():
    p = np.array([[0.7, 0.2, 0.1]])
    assert kl_divergence(p, p)[0] == pytest.approx(0.0, abs=1e-12)
    closer, farther = kl_divergence(p, np.array([[0.5, 0.3, 0.2]])), kl_divergence(p, np.array([[0.1, 0.2, 0.7]]))
    assert 0 < closer[0] < farther[0]
    assert closer[0] == pytest.approx(0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2))
    # A label one side gives no probability is floored at eps (then renormalised), so the divergence stays finite.
    eps, floored = 1e-6, np.array([0.7, 0.3, 1e-6]) / (1 + 1e-6)
    expected = sum(a * math.log(a / b) for a, b in zip(floored, [0.5, 0.3, 0.2], strict=True))
    assert kl_divergence(np.array([[0.7, 0.3, 0.0]]), np.array([[0.5, 0.3, 0.2]]), eps)[0] == pytest.approx(expected)


@pytest.mark.unit
def test_label_classifier_learns_separable_classes():
    rng = np.random.default_rng(0)
    centres = {"jazz": np.zeros(8), "rock": np.full(8, 3.0)}
    labels = [name for name in centres for _ in range(20)]
    vectors = np.stack([centres[name] + rng.normal(size=8) for name in labels])
    classifier = LabelClassifier().fit(vectors, labels)
    assert classifier.accuracy(vectors, labels).mean() >= 0.95
    assert classifier.probabilities(vectors).shape == (40, 2)
    with pytest.raises(ValueError, match="two classes"):
        LabelClassifier().fit(vectors[:3], ["jazz"] * 3)


@pytest.mark.unit
def test_a_paired_gain_is_told_from_noise():
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.5, 0.1, 24)
    clear = paired_gain(list(baseline + 0.2 + rng.normal(0, 0.05, 24)), list(baseline), "higher")
    assert 0 < clear["low"] < clear["gain"] < clear["high"] and clear["p_no_gain"] < 0.001
    assert clear["gain"] == pytest.approx(0.2, abs=0.05) and clear["prompts"] == 24
    noise = paired_gain(list(baseline + rng.normal(0, 0.1, 24)), list(baseline), "higher")
    assert noise["low"] < 0 < noise["high"] and 0.05 < noise["p_no_gain"] < 0.95
    # P(no gain) is the share of resampled mean gains at or below zero: a plain resampling agrees.
    gains = rng.normal(0.02, 0.1, 24)
    ours = paired_gain(list(baseline + gains), list(baseline), "higher")["p_no_gain"]
    draws = np.random.default_rng(1).integers(0, len(gains), (20000, len(gains)))
    assert ours == pytest.approx(float(np.mean(gains[draws].mean(axis=1) <= 0)), abs=0.02)


def test_a_lower_is_better_metric_gains_by_falling_and_unmeasured_prompts_are_left_out():
    error = paired_gain([0.1, 0.2, float("nan"), 0.1], [0.3, 0.4, 0.2, None], "lower")
    assert error == {
        "gain": pytest.approx(0.2),
        "prompts": 2,
        "low": pytest.approx(0.2),
        "high": pytest.approx(0.2),
        "p_no_gain": 0.0,
    }
    worse = paired_gain([0.5, 0.6, 0.4], [0.3, 0.2, 0.3], "lower")
    assert worse["gain"] < 0 and worse["high"] < 0 and worse["p_no_gain"] == 1.0


def test_tempo_error_forgives_the_metrical_level_but_not_a_wrong_tempo():
    assert tempo_error(240.0, 120.0) == pytest.approx(0.0)
    assert tempo_error(60.0, 120.0) == pytest.approx(0.0)
    assert tempo_error(126.0, 120.0) == pytest.approx(0.05)
    assert tempo_error(90.0, 120.0) > 0.2


@pytest.mark.unit
def test_continuation_adherence_reads_the_beat_of_what_followed_the_opening():
    rate = 32_000
    clicks = np.zeros(7 * rate, dtype=np.float32)
    for beat in np.arange(0.0, 7.0, 60 / 100):  # 100 BPM
        start = round(beat * rate)
        clicks[start : start + 320] = np.exp(-np.arange(320) / 40.0)
    kept = continuation_adherence(clicks, rate, {"tempo": 100})
    assert kept["continued_tempo_match"] == 1.0 and kept["continued_tempo_error"] < 0.04
    lost = continuation_adherence(clicks, rate, {"tempo": 130})
    assert lost["continued_tempo_match"] == 0.0 and lost["continued_tempo_error"] > 0.1
    assert continuation_adherence(clicks, rate, {"genre": "jazz"}) == {}


@pytest.mark.unit
@pytest.mark.parametrize("seconds", [-1.0, 10.0, 12.0])
def test_a_continuation_must_leave_something_to_generate(seconds):
    with pytest.raises(ParamsError, match=r"continuation_seconds \(" + str(seconds)):
        EvaluateParams(duration=10.0, continuation_seconds=seconds).check()
    EvaluateParams(duration=10.0, continuation_seconds=0.0).check()  # off


@pytest.mark.unit
def test_a_test_clip_too_short_to_continue_is_named():
    generator, clip = SimpleNamespace(sample_rate=32_000), SimpleNamespace(id="jazz-00001")
    with pytest.raises(EvaluateError, match=r"test clip jazz-00001 is 2\.0 s long: too short to continue"):
        _continuations({"model": generator}, {"real": [np.zeros(64_000)]}, ["a"], EvaluateParams(), [clip])


@pytest.fixture(scope="module")
def micro_corpus(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("evaluate") / "corpus"
    prepare(MICRO_DATA, corpus, show_progress=False)
    return corpus


@pytest.fixture(scope="module")
def three_second_corpus(tmp_path_factory):
    """Clips as long as musicnn's 3 s patch: the pretrained tagger and embedder can hear them."""
    corpus = tmp_path_factory.mktemp("evaluate-3s") / "corpus"
    prepare(replace(MICRO_DATA, clip_seconds=3.0), corpus, show_progress=False)
    return corpus


MICRO_EVALUATION = EvaluateParams(
    max_prompts=2,
    duration=2.0,
    continuation_seconds=1.0,
    batch_size=2,
    reference_clips=8,
    report_samples=2,
    max_fad_ratio=0.9,
    embedders=("mel", "encodec"),  # musicnn hears 3 s patches: the whole-run test below has them
)
EVERY_MEASURE = replace(MICRO_EVALUATION, duration=3.0, embedders=("mel", "encodec", "musicnn"))


@pytest.mark.integration
def test_evaluation_writes_metrics_decision_report_and_reference(micro_dir, three_second_corpus, tmp_path):
    params = EVERY_MEASURE
    result = evaluate(micro_dir, three_second_corpus, tmp_path / "evaluation", params)
    out = result.out_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert set(metrics["fad"]) == {"mel", "encodec", "musicnn"}
    assert metrics["tags"].startswith("MSD_musicnn")
    for values in metrics["fad"].values():
        assert set(values) == {"model", "untrained", "codec", "real"} and all(v >= 0 for v in values.values())
    # The gate embedder's FAD has its bounds over prompts (two prompts here: the estimate may fall outside).
    bounds = metrics["intervals"]["fad"]
    assert set(bounds) == {params.gate_embedder}
    assert all(0 <= bounds["mel"][s]["low"] <= bounds["mel"][s]["high"] < math.inf for s in metrics["fad"]["mel"])
    assert set(metrics["adherence"]) == set(ADHERENCE)
    assert all(set(values) == {"model", "untrained", "codec", "real"} for values in metrics["adherence"].values())
    assert set(metrics["gain_over_untrained"]) == set(metrics["adherence"])
    for name, gain in metrics["gain_over_untrained"].items():
        sign = 1 if ADHERENCE[name][1] == "higher" else -1
        by_system = metrics["adherence"][name]
        assert gain["gain"] == pytest.approx(
            sign * (by_system["model"] - by_system["untrained"]), abs=1e-9, nan_ok=True
        )
    assert set(metrics["quality"]) == set(FEATURES)
    assert metrics["prompts"] == 2 and metrics["real_time_factor"] > 0
    decision = json.loads((out / "decision.json").read_text())
    assert decision["promote"] == result.decision.promote
    assert len(list((out / "samples").glob("*.wav"))) == 2
    reference = out / "reference"
    assert (reference / "features.csv").is_file()
    assert {p.name for p in reference.glob("*.npz")} == {
        f"{e}_{s}.npz" for e in ("mel", "encodec", "musicnn") for s in ("model", "real")
    }

    page = (out / "report.html").read_text()
    for name in metrics["fad"]:
        assert f'<td class="text">{name}</td>' in page
    for label, _ in ADHERENCE.values():
        assert str(markupsafe.escape(label)) in page
    for info in FEATURES.values():
        assert info.label in page
    assert "gain over untrained [95% interval]" in page and "P(no gain)" in page
    for check in decision["checks"]:
        assert str(markupsafe.escape(check["rule"])) in page
    # Self-contained: two prompts x four systems of inline audio and spectrograms, nothing fetched.
    samples, worst = page.split('<h2 id="samples">')[1].split('<h2 id="worst">')
    assert samples.count('src="data:audio/mpeg;base64,') == 8
    # The worst prompts per metric, each with its player (two prompts: no leave-one-out FAD contribution).
    worst = worst.split('<h2 id="prompts">')[0]
    assert f"<h3>{markupsafe.escape(ADHERENCE['key_score'][0])}</h3>" in worst and "<h3>FAD contribution" not in worst
    assert worst.count('src="data:audio/mpeg;base64,') == worst.count("<tr>") > 0
    assert page.count('src="data:image/png;base64,') == 8 + 1  # and the summary chart
    assert not re.search(r'src="https?://', page)


@pytest.mark.integration
def test_evaluate_cli_names_a_missing_model(micro_corpus, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.evaluate",
            "--model",
            str(tmp_path / "nope"),
            "--corpus",
            str(micro_corpus),
            "--out",
            str(tmp_path / "evaluation"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert f"no model in {tmp_path / 'nope'}" in run.stderr
    assert not (tmp_path / "evaluation").exists()


@pytest.mark.integration
def test_an_onnx_export_is_evaluated_beside_the_same_baselines(micro_dir, micro_export, micro_corpus, tmp_path):
    params = MICRO_EVALUATION
    torch_run = evaluate(micro_dir, micro_corpus, tmp_path / "torch", params).metrics
    onnx_run = evaluate(micro_dir, micro_corpus, tmp_path / "onnx", params, onnx_dir=micro_export.out_dir).metrics
    # The baselines do not depend on the backend; the model's samples come from ONNX Runtime, which samples
    # the same tokens as torch for the same seed (top-k at MusicGen's default covers the micro vocabulary).
    # The export has no codec encoder to read a real opening with: no continuation metrics.
    continued = {"continued_tempo_match", "continued_tempo_error"}
    assert set(torch_run["adherence"]) - set(onnx_run["adherence"]) == continued
    for name in onnx_run["fad"]:
        assert onnx_run["fad"][name]["untrained"] == torch_run["fad"][name]["untrained"]
        assert onnx_run["fad"][name]["model"] == pytest.approx(torch_run["fad"][name]["model"], rel=1e-3)
