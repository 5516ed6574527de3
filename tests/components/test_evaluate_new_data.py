"""The evaluation with new data: the main corpus's test split stays the headline (and comparable with the promoted
model's), each data source's test split is reported beside it, a fine-tuned model is measured beside the model it
started from, and the gate refuses a model that gains on the new data but forgets the old beyond the tolerance."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, replace

import pytest

from components.corpus.manifest import read_manifest, write_manifest
from components.evaluate import before_after, evaluate, starting_model
from components.evaluation.datasets import CORPUS, held_out_splits
from components.evaluation.gate import decide
from components.prepare import prepare
from components.training.start import weights_digest
from model.checkpoint import ModelCard
from settings.params import EvaluateParams
from tests.components.test_evaluate import GATE, MICRO_EVALUATION, crafted
from tests.support.micro_pipeline import MICRO_DATA


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The micro corpus, and a copy with a data source "polka": two test clips and two training clips."""
    root = tmp_path_factory.mktemp("new-data")
    prepare(MICRO_DATA, root / "old", show_progress=False)
    shutil.copytree(root / "old", root / "new")
    clips = read_manifest(root / "new")
    added = []
    for split in ("test", "train"):
        for n, clip in enumerate([c for c in clips if c.split == split][:2]):
            labels = {"dataset": "polka"}  # a source's clips carry a caption, not the corpus's labels
            added.append(replace(clip, id=f"polka-{split}-{n}", caption=f"polka {n}", labels=labels, source=f"p{n}"))
    write_manifest(root / "new", [*clips, *added])
    return root / "old", root / "new"


@pytest.mark.unit
def test_test_splits_put_the_main_corpus_first_and_each_source_beside_it(corpora):
    splits = held_out_splits(read_manifest(corpora[1]), max_prompts=2)
    assert list(splits) == [CORPUS, "polka"]
    assert [clip.id for clip in splits["polka"]] == ["polka-test-0", "polka-test-1"]
    assert all("dataset" not in clip.labels for clip in splits[CORPUS]) and len(splits[CORPUS]) == 2


@pytest.mark.integration
def test_new_data_is_reported_beside_the_unchanged_old_split(micro_dir, corpora, tmp_path):
    params = replace(MICRO_EVALUATION, continuation_seconds=0.0)
    old = evaluate(micro_dir, corpora[0], tmp_path / "old", params).metrics
    new = evaluate(micro_dir, corpora[1], tmp_path / "new", params).metrics
    # The headline is the old split's, measured as before: the promoted model's numbers stay comparable.
    assert new["settings"] == old["settings"] and new["prompts"] == old["prompts"] == 2
    assert all(new["fad"][name] == pytest.approx(old["fad"][name]) for name in old["fad"])
    assert new["adherence"].keys() == old["adherence"].keys()
    assert old["new_data"] == {}
    polka = new["new_data"]["polka"]
    assert polka["prompts"] == 2 and set(polka["fad"]) == set(new["fad"])
    assert set(polka["fad"]["mel"]) == {"model", "untrained", "codec", "real"}
    assert "label_accuracy" not in polka["adherence"]  # no genre label on the source's clips
    assert '<h2 id="new-data-polka">New data: polka</h2>' in (tmp_path / "new" / "report.html").read_text()
    rows = (tmp_path / "new" / "per_prompt.csv").read_text()
    assert "polka-test-0" in rows and "polka-test-1" in rows


@pytest.mark.unit
def test_the_gate_weighs_the_old_split_whatever_the_new_data_gained(tmp_path):
    promoted = tmp_path / "promoted"
    promoted.mkdir()
    (promoted / "metrics.json").write_text(json.dumps(crafted(fad_model=1.0, tempo=0.6)))
    gained = {"polka": {"adherence": {"tempo_match": {"model": 0.9, "untrained": 0.1}}, "prompts": 8}}
    kept = crafted(fad_model=1.05, tempo=0.55) | {"new_data": gained}
    assert decide(kept, GATE, promoted).promote  # learnt the new data, the old within tolerance
    forgot = crafted(fad_model=1.5, tempo=0.3) | {"new_data": gained}
    refused = decide(forgot, GATE, promoted)
    assert not refused.promote
    assert {c.name for c in refused.checks if not c.passed} == {"regression.fad.mel", "regression.tempo_match"}
    assert asdict(EvaluateParams()).get("regression_tolerance") == 0.1  # the default the crafted numbers assume


@pytest.fixture(scope="module")
def fine_tuned(micro_dir, tmp_path_factory):
    """A "fine-tuned" model: a copy of the micro model whose card says it started from another copy of it (the
    weights are the same, so every before-after gain is zero)."""
    root = tmp_path_factory.mktemp("fine-tuned")
    start, tuned = root / "start", root / "tuned"
    shutil.copytree(micro_dir, start)
    shutil.copytree(micro_dir, tuned)
    card = json.loads((tuned / "musicops.json").read_text())
    card |= {"started_from": str(start), "started_from_sha256": weights_digest(start)}
    (tuned / "musicops.json").write_text(json.dumps(card))
    return start, tuned


@pytest.fixture(scope="module")
def labelled_corpus(corpora, tmp_path_factory):
    """The corpus with the source "polka" whose clips carry a genre the main corpus lacks (as `data render`
    writes it into the source's captions)."""
    folder = tmp_path_factory.mktemp("labelled") / "corpus"
    shutil.copytree(corpora[1], folder)
    clips = read_manifest(folder)
    polka = lambda clip: replace(clip, labels=clip.labels | {"genre": "polka"})  # noqa: E731
    write_manifest(folder, [polka(c) if c.id.startswith("polka-") else c for c in clips])
    return folder


@pytest.mark.integration
def test_a_fine_tuned_model_is_measured_beside_the_model_it_started_from(fine_tuned, labelled_corpus, tmp_path):
    start, tuned = fine_tuned
    metrics = evaluate(tuned, labelled_corpus, tmp_path / "evaluation", MICRO_EVALUATION).metrics
    assert metrics["start"]["directory"] == str(start)
    assert set(metrics["fad"]["mel"]) == {"model", "start", "untrained", "codec", "real"}
    # The start continues the real openings in the untrained model's place: it is the baseline here.
    continued = metrics["adherence"]["continued_tempo_match"]
    assert math.isnan(continued["untrained"]) and not math.isnan(continued["start"])
    # The same weights from the same seed: the same audio, so no gain and no regression.
    assert metrics["fad"]["mel"]["start"] == pytest.approx(metrics["fad"]["mel"]["model"])
    measured = [gain["gain"] for gain in metrics["gain_over_start"].values() if gain["prompts"]]
    assert measured and all(gain == pytest.approx(0.0) for gain in measured)
    polka = metrics["new_data"]["polka"]
    assert set(polka["gain_over_start"]) == set(polka["adherence"])
    # The classifier learnt the source's genre from its training clips, so the new genre is measured.
    assert "label_accuracy" in polka["adherence"]
    decision = json.loads((tmp_path / "evaluation" / "decision.json").read_text())
    from_start = {c["name"] for c in decision["checks"] if c["name"].startswith("regression_from_start.")}
    assert "regression_from_start.fad.mel" in from_start
    assert all(c["passed"] for c in decision["checks"] if c["name"] in from_start)
    line = before_after(polka)
    assert line.startswith("start -> model: ") and "label_accuracy" in line and "FAD (mel)" in line
    page = (tmp_path / "evaluation" / "report.html").read_text()
    assert "gain over start [95% interval]" in page and f"({start})" in page


@pytest.mark.integration
def test_a_starting_model_changed_since_training_is_not_measured(fine_tuned, tmp_path):
    start, tuned = fine_tuned
    changed = tmp_path / "changed"
    shutil.copytree(tuned, changed)
    card = json.loads((changed / "musicops.json").read_text())
    (changed / "musicops.json").write_text(json.dumps(card | {"started_from_sha256": "0" * 64}))
    directory, note = starting_model(ModelCard.read(changed))
    assert directory is None and "has changed since training started from it" in note
    assert starting_model(ModelCard.read(tuned))[0] == start
    assert "from scratch" in starting_model(ModelCard())[1]


@pytest.mark.unit
def test_the_gate_refuses_a_model_that_forgot_what_its_start_knew():
    def with_start(metrics: dict, fad: float, tempo: float) -> dict:
        metrics["fad"]["mel"]["start"], metrics["adherence"]["tempo_match"]["start"] = fad, tempo
        return metrics

    kept = decide(with_start(crafted(fad_model=1.05, tempo=0.55), fad=1.0, tempo=0.6), GATE)
    assert kept.promote and any(c.name == "regression_from_start.tempo_match" for c in kept.checks)
    forgot = decide(with_start(crafted(fad_model=1.5, tempo=0.3), fad=1.0, tempo=0.6), GATE)
    assert not forgot.promote
    failed = {c.name for c in forgot.checks if not c.passed}
    assert failed == {"regression_from_start.fad.mel", "regression_from_start.tempo_match"}
    rules = {c.name: c.rule for c in forgot.checks}
    assert "starting model's 0.6" in rules["regression_from_start.tempo_match"]
