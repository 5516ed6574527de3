"""The evaluation with new data: the main corpus's test split stays the headline (and comparable with the promoted
model's), each data source's test split is reported beside it, and the gate refuses a model that gains on the new
data but forgets the old beyond the tolerance."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace

import pytest

from components.corpus.manifest import read_manifest, write_manifest
from components.evaluate import evaluate
from components.evaluation.datasets import CORPUS, held_out_splits
from components.evaluation.gate import decide
from components.prepare import prepare
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
