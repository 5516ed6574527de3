"""The final split (components/holdout.py): the corpus's recipe from a seed no stage uses, all of it held out,
rendered once per recipe; and an evaluation that reads it says so and compares with no test-split evaluation."""

import csv
import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from components.corpus.manifest import read_manifest
from components.evaluate import FINAL_SPLIT, evaluate
from components.holdout import CLIPS, SEED_OFFSET, ensure_holdout, holdout_params
from musicops.cli import app
from settings.params import DataParams, ParamsError
from tests.components.test_evaluate import MICRO_EVALUATION
from tests.support.micro_pipeline import MICRO_DATA


@pytest.mark.unit
def test_the_holdout_is_the_recipe_from_another_seed_all_held_out():
    data = DataParams(seed=3, count=360, genres=["jazz", "rock"], sources=["reggae"])
    held = holdout_params(data)
    assert (held.seed, held.count, held.sources) == (3 + SEED_OFFSET, CLIPS, [])
    assert held.splits == {"train": 0.0, "valid": 0.0, "test": 1.0} and held.genres == ["jazz", "rock"]
    held.check()
    with pytest.raises(ParamsError, match="hold out a prepared corpus of your own"):
        holdout_params(replace(data, source="/my/audio"))


@pytest.mark.unit
def test_holdout_needs_final():
    result = CliRunner().invoke(app, ["evaluate", "--holdout", "somewhere"])
    assert result.exit_code == 2 and "use it with --final" in result.output


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from components.prepare import prepare

    root = tmp_path_factory.mktemp("holdout")
    prepare(MICRO_DATA, root / "corpus", show_progress=False)
    return root / "corpus", ensure_holdout(MICRO_DATA, root / "holdout", show_progress=False)


@pytest.mark.integration
def test_the_holdout_is_rendered_once_per_recipe(corpora, tmp_path):
    corpus, holdout = corpora
    clips = read_manifest(holdout)
    assert len(clips) == CLIPS and {clip.split for clip in clips} == {"test"}
    captions = {clip.caption for clip in read_manifest(corpus)}
    assert not captions & {clip.caption for clip in clips}  # other compositions, not the corpus's again
    manifest = holdout / "manifest.jsonl"
    before = manifest.stat().st_mtime_ns
    ensure_holdout(MICRO_DATA, holdout, show_progress=False)
    assert manifest.stat().st_mtime_ns == before  # the same recipe: not rendered again
    shorter = replace(MICRO_DATA, clip_seconds=1.0)
    ensure_holdout(shorter, holdout, show_progress=False)
    assert {clip.duration for clip in read_manifest(holdout)} == {1.0}  # another recipe: rendered again


@pytest.mark.integration
def test_a_final_evaluation_reads_the_holdout_and_says_so(micro_dir, corpora, tmp_path):
    corpus, holdout = corpora
    params = replace(MICRO_EVALUATION, continuation_seconds=0.0)
    test = evaluate(micro_dir, corpus, tmp_path / "test", params).metrics
    final = evaluate(micro_dir, corpus, tmp_path / "final", params, holdout_dir=holdout).metrics
    assert (test["split"], final["split"]) == ("test", FINAL_SPLIT) and test["settings"] != final["settings"]
    assert json.loads((tmp_path / "final" / "metrics.json").read_text())["prompts"] == 2
    with open(tmp_path / "final" / "per_prompt.csv", newline="") as table:
        captions = {row["caption"] for row in csv.DictReader(table)}
    assert len(captions) == 2 and captions <= {clip.caption for clip in read_manifest(holdout)}
    assert "prompts of the <b>holdout</b> split" in (tmp_path / "final" / "report.html").read_text()
