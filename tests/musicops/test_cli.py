"""`musicops generate` and `musicops info`: real runs of the Typer app, and every bad input named."""

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from model.checkpoint import CARD_FILE
from musicops.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_generate_writes_a_wav_of_the_requested_duration(micro_dir, tmp_path):
    out = tmp_path / "jazz.wav"
    result = runner.invoke(
        app, ["generate", "upbeat jazz", "-m", str(micro_dir), "-d", "0.7", "-o", str(out), "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    info = sf.info(str(out))
    assert info.samplerate == 32_000 and info.frames == round(0.7 * 32_000)
    assert "seed 3" in result.output


def test_streamed_and_continued_generation(micro_dir, tmp_path):
    streamed = tmp_path / "s.wav"
    result = runner.invoke(app, ["generate", "a", "-m", str(micro_dir), "-d", "0.5", "-o", str(streamed), "--stream"])
    assert result.exit_code == 0, result.output
    assert "first chunk after" in result.output
    continued = tmp_path / "c.wav"
    args = ["generate", "a", "-m", str(micro_dir), "-d", "0.3", "-o", str(continued), "--continue", str(streamed)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sf.info(str(continued)).frames == round(0.8 * 32_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "0"], "duration must be positive"),
        (["-d", "-3"], "duration must be positive"),
        (["-d", "500"], "beyond this model's limit"),
        (["--guidance", "0.5"], "guidance scale"),
        (["--top-p", "1.5"], "top-p"),
        (["--temperature", "-1"], "temperature"),
        (["-m", "/no/such/model"], "does not exist"),
        (["-o", "/no/such/folder/x.wav"], "does not exist"),
    ],
)
def test_bad_input_gets_one_clear_line_and_writes_nothing(micro_dir, tmp_path, args, message):
    out = tmp_path / "x.wav"
    full = ["generate", "x", "-m", str(micro_dir), "-o", str(out), *args]
    result = runner.invoke(app, full)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("error:") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["/proc/x.wav", "DIR"])
def test_unwritable_output(micro_dir, tmp_path, target):
    out = str(tmp_path) if target == "DIR" else target  # /proc takes no new files, even from root
    result = runner.invoke(app, ["generate", "x", "-m", str(micro_dir), "-o", out])
    assert result.exit_code == 2
    assert "not writable" in result.output or "is a directory" in result.output


def test_corrupt_model_directory(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    result = runner.invoke(app, ["generate", "x", "-m", str(tmp_path / "broken"), "-o", str(tmp_path / "x.wav")])
    assert result.exit_code == 2 and "cannot load the model" in result.output


def test_info_prints_the_card(micro_dir):
    result = runner.invoke(app, ["info", str(micro_dir)])
    assert result.exit_code == 0, result.output
    assert "micro" in result.output and "data version" in result.output and "test" in result.output


def test_info_lists_the_data_sources(micro_dir, tmp_path):
    model = Path(shutil.copytree(micro_dir, tmp_path / "model"))
    card_file = model / CARD_FILE
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "data_sources": {"cellos": "ab" * 32}}))
    result = runner.invoke(app, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert "cellos (abababababab)" in result.output
