"""The codec stage follows train.init_from: with a starting model (ours, or laid out like facebook/musicgen-small)
it trains nothing and writes that model's own codec, whose tokens the train stage then accepts; codec.pretrained
beside a starting model is refused; dvc.yaml re-runs the stage when train.init_from changes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import EncodecFeatureExtractor
from typer.testing import CliRunner

from components import train_codec as stage
from components.prepare import prepare
from components.tokenize import tokenize
from components.train import train
from model import MusicGenerator
from settings.params import CodecParams, DataParams, ParamsError, TokenizeParams, TrainParams
from tests.conftest import MICRO
from tests.support import REPO
from tests.support.micro_pipeline import MICRO_TRAIN
from tests.support.musicgen_small import micro_musicgen_small

pytestmark = pytest.mark.integration

DATA = DataParams(count=8, clip_seconds=1.0, seed=3)
# Steps the stage would train, were it training: it must not.
CODEC = CodecParams(steps=2, batch_size=2, segment_seconds=0.5, valid_clips=1)
SHORT = {**MICRO_TRAIN, "steps": 2, "eval_every": 2, "batch_size": 2, "segment_seconds": 0.5, "valid_batches": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "corpus"
    prepare(DATA, folder, show_progress=False)
    return folder


@pytest.fixture(params=["ours", "musicgen-small"])
def start_model(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "ours":
        return request.getfixturevalue("micro_dir")
    return micro_musicgen_small(tmp_path / "musicgen-small", seed=1)


def _audio_encoder(directory: Path) -> dict[str, torch.Tensor]:
    weights = load_file(directory / "model.safetensors")
    return {name.removeprefix("audio_encoder."): value for name, value in weights.items() if name.startswith("audio_")}


def test_the_stage_writes_the_starting_models_codec_and_training_accepts_its_tokens(
    corpus: Path, start_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "codec"
    report = stage.train_codec([corpus], out, DATA, CODEC, show_progress=False, init_from=str(start_model))

    expected, written = _audio_encoder(start_model), load_file(out / "model.safetensors")
    assert expected and written.keys() == expected.keys()
    assert all(torch.equal(written[name], expected[name]) for name in expected)
    assert EncodecFeatureExtractor.from_pretrained(out).sampling_rate == 32_000
    assert report.history == [] and report.metrics["steps"] == 0
    assert report.metrics["start_model"] == str(start_model) and report.metrics["pretrained"] is None
    assert json.loads((out / "metrics.json").read_text()) == report.metrics
    assert "untrained" in report.metrics["baselines"] and report.metrics["mel_distance"] > 0
    assert not list(tmp_path.glob(".codec.checkpoint-*"))  # nothing was trained, so nothing to resume
    assert f"the codec of the starting model {start_model}" in stage._summary(report.metrics, out)

    tokenize(out, [corpus], tmp_path / "tokens", TokenizeParams(batch_size=4))
    params = TrainParams(**SHORT, init_from=str(start_model))
    train(tmp_path / "tokens", out, tmp_path / "train", tmp_path / "model", params, preset=MICRO, show_progress=False)
    trained = tmp_path / "model"
    assert json.loads((tmp_path / "train/checkpoints/last/meta.json").read_text())["step"] == 2
    # The trained model keeps the codec its tokens were made with.
    kept = _audio_encoder(trained)
    assert all(torch.equal(kept[name], expected[name]) for name in expected)
    assert MusicGenerator.load(trained).frame_rate == 50


def test_codec_pretrained_beside_a_starting_model_is_refused(corpus: Path, micro_dir: Path, tmp_path: Path) -> None:
    params = replace(CODEC, pretrained=str(tmp_path / "encodec_32khz"))
    with pytest.raises(ParamsError, match=r"codec.pretrained is .* but train.init_from is .*brings its own codec"):
        stage.train_codec([corpus], tmp_path / "codec", DATA, params, show_progress=False, init_from=str(micro_dir))
    assert not (tmp_path / "codec").exists()


def _params_file(folder: Path, codec: dict, init_from: str) -> Path:
    document = {
        "data": {"count": DATA.count, "clip_seconds": DATA.clip_seconds, "seed": DATA.seed},
        "codec": {"steps": CODEC.steps, "batch_size": CODEC.batch_size, "valid_clips": 1, **codec},
        "train": {"init_from": init_from},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_cli_reads_train_init_from(corpus: Path, micro_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "codec"
    args = ["--corpus", str(corpus), "--out", str(out)]
    refused = _params_file(tmp_path, {"pretrained": str(tmp_path)}, str(micro_dir))
    result = CliRunner().invoke(stage.app, ["--params", str(refused), *args])
    assert result.exit_code == 2 and result.output.startswith("error: codec.pretrained is ")
    assert not out.exists()
    missing = _params_file(tmp_path, {}, str(tmp_path / "nowhere"))
    result = CliRunner().invoke(stage.app, ["--params", str(missing), *args])
    assert result.exit_code == 2 and "holds no model" in result.output and not out.exists()
    result = CliRunner().invoke(stage.app, ["--params", str(_params_file(tmp_path, {}, str(micro_dir))), *args])
    assert result.exit_code == 0, result.output
    assert f"the codec of the starting model {micro_dir} (train.init_from), not trained" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["start_model"] == str(micro_dir)


def test_dvc_reruns_the_codec_stage_when_train_init_from_changes() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "train.init_from" in stages["train_codec"]["params"]
    # train.init_from alone: the rest of train (a learning rate) must not re-train the codec.
    assert "train" not in stages["train_codec"]["params"]
