"""The codec stage on a small synthetic corpus (harmonic tones with clicks) and a micro codec of the tiny
preset's layout: the trained quantizer converts exactly into transformers' EncodecModel, runs are
deterministic, the codec learns, the adversarial phase switches on, a pretrained codec is copied through,
bad inputs are named, the output folder appears whole or not at all, and a killed run resumes from its
checkpoint to the same weights (a SIGKILL through the CLI in subprocesses)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from subprocess import PIPE, STDOUT
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file
from transformers import EncodecFeatureExtractor, EncodecModel
from typer.testing import CliRunner

from components import train_codec as stage
from components.codec.data import CropSampler, training_files
from components.codec.losses import SpectrumLoss
from components.codec.metrics import frame_template_share
from components.codec.model import TrainableCodec
from components.codec.training import CodecTrainer, fit
from components.corpus.manifest import Clip, write_manifest
from model import presets
from model.build import codec_config
from settings.params import CodecParams, DataParams, load_section
from tests.support import REPO
from tests.support.micro_codec import MICRO_CODEC

pytestmark = pytest.mark.integration

SR = 32_000
SECONDS = 1.5
_TINY = presets.get_preset("tiny")
MICRO = MICRO_CODEC
DATA = DataParams(sample_rate=SR)
# Without the discriminator (the default has one from step 0): test_adversarial_phase_joins_at_its_step adds it.
PARAMS = CodecParams(steps=8, batch_size=4, segment_seconds=0.5, learning_rate=1e-3, valid_clips=2, adversarial=False)
TIMING = ("train_seconds", "seconds_per_step", "kmeans_init_seconds")


def _clip(rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone on a random pitch with three noise-burst clicks."""
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
    audio = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6))
    for start in rng.integers(0, n - 400, 3):
        audio[start : start + 400] += 2 * np.exp(-np.arange(400) / 60) * rng.standard_normal(400)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def _write_corpus(folder: Path, splits: list[str], seed: int = 0) -> Path:
    (folder / "audio").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    clips = []
    for number, split in enumerate(splits):
        sf.write(folder / f"audio/c{number}.flac", _clip(rng), SR)
        clips.append(Clip(f"c{number}", f"audio/c{number}.flac", SECONDS, SR, "a tone", split, f"s{number}"))
    write_manifest(folder, clips)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("data") / "corpus", ["train"] * 6 + ["valid"] * 2)


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> stage.CodecReport:
    out = tmp_path_factory.mktemp("runs") / "codec"
    return stage.train_codec([corpus], out, DATA, PARAMS, preset=MICRO, show_progress=False)


def _untimed(metrics: dict) -> dict:
    return {name: value for name, value in metrics.items() if name not in TIMING}


def test_saved_codec_encodes_and_decodes_exactly_as_trained(corpus: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    sampler = CropSampler(training_files([corpus], SR), samples=SR // 2, seed=0)
    codec = TrainableCodec(codec_config(MICRO), dead_code_threshold=0.3)
    codec.init_codebooks(sampler.batch(4) for _ in range(2))
    fit(codec, sampler.batches(4), PARAMS, SR, show_progress=False)
    audio = sampler.batch(3)
    codec.eval()
    with torch.no_grad():
        quantized, codes, _ = codec.quantize(audio)
        decoded = codec.encodec.decoder(quantized)
    codec.to_encodec().save_pretrained(tmp_path)
    saved = EncodecModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        encoded = saved.encode(audio, bandwidth=saved.config.target_bandwidths[-1])
        redecoded = saved.decode(encoded.audio_codes, encoded.audio_scales).audio_values
    assert encoded.audio_codes.shape == (1, 3, MICRO.codec.num_codebooks, SR // 2 // MICRO.codec.hop_length)
    assert torch.equal(encoded.audio_codes[0], codes)
    # Same weights, same arithmetic: the decoded audio agrees to float32 rounding (1e-6 of full scale).
    torch.testing.assert_close(redecoded, decoded, rtol=0, atol=1e-6)
    # Learned codebooks, not transformers' zeros (with which every frame encodes to code 0): every saved codebook
    # holds distinct vectors, and the codes vary. Which codebooks vary after 8 steps depends on the CPU's float
    # rounding (on an AVX2-only EPYC the first two still use one code each), so no codebook is singled out.
    for layer in saved.quantizer.layers:
        vectors = layer.codebook.embed
        assert vectors.abs().sum() > 0 and len(vectors.unique(dim=0)) > 1
    assert len(codes.unique()) > 1


def test_frame_template_share_tells_a_repeated_frame_from_audio_that_follows_the_codes() -> None:
    class Decoder:  # decodes any codes to the audio it is given
        config = codec_config(MICRO)

        def __init__(self, audio: np.ndarray) -> None:
            self.audio = torch.from_numpy(audio)

        def eval(self) -> None:
            pass

        def decode(self, codes, scales):
            return SimpleNamespace(audio_values=self.audio[None, None])

    hop, frames = int(np.prod(MICRO.codec.upsampling_ratios)), 250
    rng = np.random.default_rng(0)
    template, noise = np.tile(rng.standard_normal(hop), frames), rng.standard_normal(hop * frames)
    assert frame_template_share(Decoder(template)) == pytest.approx(1.0)
    assert frame_template_share(Decoder(noise)) < 0.02
    assert frame_template_share(Decoder(template + noise)) == pytest.approx(0.5, abs=0.05)
    # transformers' EnCodec decoder at PyTorch's default init is the first kind: its biases become a template
    torch.manual_seed(0)
    untrained = EncodecModel(codec_config(_TINY))
    for layer in untrained.quantizer.layers:
        layer.codebook.embed.normal_()
    assert frame_template_share(untrained) > 0.9


def test_spectrum_loss_hears_a_semitone() -> None:
    time = torch.arange(SR) / SR
    a, b_flat = torch.sin(2 * torch.pi * 220.0 * time), torch.sin(2 * torch.pi * 233.08 * time)
    loss = SpectrumLoss(SR)
    assert loss(a[None], a[None]) == 0
    # a semitone off costs far more than 1% too loud (log10 1.01^2 = 0.0086 in every bin)
    assert loss(b_flat[None], a[None]) > 5 * loss(1.01 * a[None], a[None])


def test_output_is_a_loadable_encodec_with_metrics(trained: stage.CodecReport) -> None:
    out = trained.out_dir
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} <= {
        path.name for path in out.iterdir()
    }
    model = EncodecModel.from_pretrained(out)
    codes = model.encode(torch.zeros(1, 1, SR), bandwidth=model.config.target_bandwidths[-1]).audio_codes
    assert codes.shape[2] == MICRO.codec.num_codebooks
    assert EncodecFeatureExtractor.from_pretrained(out).sampling_rate == SR
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == trained.metrics
    assert metrics["steps"] == PARAMS.steps and metrics["valid_clips"] == 2
    assert metrics["baselines"]["silence"]["snr_db"] == 0.0 and metrics["baselines"]["silence"]["si_snr_db"] is None
    for scores in (metrics, metrics["baselines"]["untrained"]):
        assert all(np.isfinite(scores[name]) for name in ("si_snr_db", "snr_db", "mel_distance"))
        assert 0.0 <= scores["frame_template_share"] <= 1.0
    assert set(metrics["final_losses"]) == {"l1", "mel", "spectrum", "commit", "total"}


def test_same_seed_same_codec(corpus: Path, trained: stage.CodecReport, tmp_path: Path) -> None:
    again = stage.train_codec([corpus], tmp_path / "again", DATA, PARAMS, preset=MICRO, show_progress=False)
    other = stage.train_codec(
        [corpus], tmp_path / "other", DATA, replace(PARAMS, seed=1), preset=MICRO, show_progress=False
    )
    weights = (trained.out_dir / "model.safetensors").read_bytes()
    assert _untimed(again.metrics) == _untimed(trained.metrics) and again.history == trained.history
    assert (tmp_path / "again/model.safetensors").read_bytes() == weights
    assert (tmp_path / "other/model.safetensors").read_bytes() != weights and other.history != trained.history


def test_loss_falls_on_a_fixed_batch(corpus: Path) -> None:
    torch.manual_seed(0)
    sampler = CropSampler(training_files([corpus], SR), samples=SR // 2, seed=0)
    codec = TrainableCodec(codec_config(MICRO), dead_code_threshold=0.3)
    codec.init_codebooks([sampler.batch(8)])
    batch = sampler.batch(4)
    history = fit(codec, itertools.repeat(batch), replace(PARAMS, steps=30), SR, show_progress=False)
    first, last = history[0]["total"], np.mean([row["total"] for row in history[-5:]])
    assert last < 0.7 * first, [round(row["total"], 3) for row in history]


def test_adversarial_phase_joins_at_its_step(corpus: Path, trained: stage.CodecReport, tmp_path: Path) -> None:
    params = replace(PARAMS, adversarial=True, adversarial_start=4)
    report = stage.train_codec([corpus], tmp_path / "gan", DATA, params, preset=MICRO, show_progress=False)
    before, after = report.history[:4], report.history[4:]
    assert before == trained.history[:4]  # until the switch, exactly the run without a discriminator
    assert all({"adv", "feat", "disc"} <= set(row) and row["adv"] > 0 and row["feat"] > 0 for row in after)
    assert [row["total"] for row in after] != [row["total"] for row in trained.history[4:]]
    assert {"adv", "feat", "disc"} <= set(report.metrics["final_losses"])


def test_pretrained_codec_is_copied_and_measured(corpus: Path, trained: stage.CodecReport, tmp_path: Path) -> None:
    pretrained = tmp_path / "encodec_32khz"
    pretrained.mkdir()
    for name in ("config.json", "model.safetensors"):  # the hub layout, without our extras
        shutil.copy(trained.out_dir / name, pretrained / name)
    params = replace(PARAMS, pretrained=str(pretrained))
    report = stage.train_codec([corpus], tmp_path / "codec", DATA, params, show_progress=False)
    out = tmp_path / "codec"
    assert (out / "model.safetensors").read_bytes() == (pretrained / "model.safetensors").read_bytes()
    assert EncodecFeatureExtractor.from_pretrained(out).sampling_rate == SR
    assert report.history == [] and report.metrics["steps"] == 0 and report.metrics["pretrained"] == str(pretrained)
    for name in ("si_snr_db", "snr_db", "mel_distance"):  # the same model on the same clips
        assert report.metrics[name] == pytest.approx(trained.metrics[name], abs=1e-9)
    assert json.loads((out / "metrics.json").read_text()) == report.metrics


def test_crash_while_saving_leaves_the_previous_output(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "codec"
    out.mkdir()
    (out / "metrics.json").write_text("{}")

    def crash(folder: Path, metrics: dict) -> None:
        (folder / "metrics.json").write_text("partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(stage, "_write_metrics", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        stage.train_codec([corpus], out, DATA, replace(PARAMS, steps=2), preset=MICRO, show_progress=False)
    # Beside it only the last checkpoint, which a rerun resumes at its end instead of training again.
    assert [path.name for path in tmp_path.iterdir() if path.name != "codec"] == [_checkpoint_folder(out).name]
    assert [path.name for path in out.iterdir()] == ["metrics.json"] and (out / "metrics.json").read_text() == "{}"


# Resuming: a run stopped mid-way continues from its last checkpoint to the weights of an unbroken run.


def _checkpoint_folder(out: Path) -> Path:
    (folder,) = out.parent.glob(f".{out.name}.checkpoint-*")
    return folder


class _Killed(Exception):
    pass


def _stop_before(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make training raise when it reaches `step`, as a kill would stop it (after the checkpoints before)."""
    original = CodecTrainer.train_step

    def train_step(trainer: CodecTrainer, audio: torch.Tensor) -> dict[str, float]:
        if trainer.step == step:
            raise _Killed
        return original(trainer, audio)

    monkeypatch.setattr(CodecTrainer, "train_step", train_step)


def _count_kmeans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = TrainableCodec.init_codebooks

    def init_codebooks(codec: TrainableCodec, batches) -> None:
        calls.append(1)
        original(codec, batches)

    monkeypatch.setattr(TrainableCodec, "init_codebooks", init_codebooks)
    return calls


def _stopped_run(corpus: Path, out: Path, params: CodecParams, step: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _stop_before(step, patch)
        with pytest.raises(_Killed):
            stage.train_codec([corpus], out, DATA, params, preset=MICRO, show_progress=False)


def test_a_stopped_run_resumes_to_the_same_codec_without_a_second_kmeans(
    corpus: Path, trained: stage.CodecReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    out, params = tmp_path / "codec", replace(PARAMS, checkpoint_every=2)
    _stopped_run(corpus, out, params, step=5)
    assert json.loads((_checkpoint_folder(out) / "last/meta.json").read_text())["step"] == 4 and not out.exists()
    kmeans = _count_kmeans(monkeypatch)
    with caplog.at_level("INFO", logger=stage.__name__):
        report = stage.train_codec([corpus], out, DATA, params, preset=MICRO, show_progress=False)
    assert kmeans == [] and "resuming the codec from step 4 of 8" in caplog.text
    # checkpoint_every changes nothing but where a run can resume: the unbroken run checkpointed only at the end
    assert report.history == trained.history and _untimed(report.metrics) == _untimed(trained.metrics)
    assert (out / "model.safetensors").read_bytes() == (trained.out_dir / "model.safetensors").read_bytes()
    assert not list(tmp_path.glob(".codec.checkpoint-*"))  # published: the checkpoint is gone


def test_other_parameters_and_no_resume_start_over(
    corpus: Path, trained: stage.CodecReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, params = tmp_path / "codec", replace(PARAMS, checkpoint_every=2)
    _stopped_run(corpus, out, params, step=3)
    stale = _checkpoint_folder(out)
    kmeans = _count_kmeans(monkeypatch)
    other = stage.train_codec([corpus], out, DATA, replace(params, seed=1), preset=MICRO, show_progress=False)
    assert kmeans == [1] and len(other.history) == params.steps and not stale.exists()
    _stopped_run(corpus, out, params, step=3)
    again = stage.train_codec([corpus], out, DATA, params, preset=MICRO, show_progress=False, resume=False)
    assert len(kmeans) == 3 and again.history == trained.history  # the stopped run's own k-means, then a fresh one
    assert not list(tmp_path.glob(".codec.checkpoint-*"))


def _single_threaded_run(out: Path, params_file: Path, corpus: Path) -> None:
    """The stage in this process on one thread, as the subprocesses run it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data, params = load_section(params_file, "data"), load_section(params_file, "codec")
        stage.train_codec([corpus], out, data, params, preset=MICRO, show_progress=False)
    finally:
        torch.set_num_threads(threads)


def _close(one: object, other: object) -> bool:
    """Equal, floats to 1e-12: numpy's float64 dot products in the measurements run on more threads in this
    process than in the one-thread subprocess, and sum in another order."""
    if isinstance(one, dict) and isinstance(other, dict):
        return one.keys() == other.keys() and all(_close(one[key], other[key]) for key in one)
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(map(_close, one, other))
    if isinstance(one, float):
        return other == pytest.approx(one, rel=1e-12, abs=1e-12)
    return one == other


def test_a_run_killed_with_sigkill_resumes_to_the_same_codec(corpus: Path, tmp_path: Path, micro_preset: None) -> None:
    """Through the CLI in a subprocess on one thread, with the discriminator on from the second step (so both
    optimizers are in the checkpoints), killed after its checkpoint at step 2 or 3, rerun without flags, and
    compared with an unbroken run (in this process, while the rerun runs: most of a subprocess is imports)."""
    steps = 4
    params = _params_file(
        tmp_path, steps=steps, batch_size=2, checkpoint_every=1, adversarial=True, adversarial_start=1
    )

    def run(out: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "tests.support.micro_codec", "--params", params, "--corpus", corpus]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        return subprocess.Popen(
            [*map(str, command), "--out", str(out)], cwd=REPO, env=env, stdout=PIPE, stderr=STDOUT, text=True
        )

    killed = run(tmp_path / "killed")
    meta, deadline = None, time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        meta = next(tmp_path.glob(".killed.checkpoint-*/last/meta.json"), None)
        if meta and json.loads(meta.read_text())["step"] >= 2:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stopped_at = json.loads(meta.read_text())["step"]
    assert 2 <= stopped_at < steps and not (tmp_path / "killed").exists(), "the run must be killed mid-way"
    resumed = run(tmp_path / "killed")
    _single_threaded_run(tmp_path / "straight", params, corpus)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resuming the codec from step {stopped_at} of {steps}" in output
    one, other = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "killed"))
    assert one.keys() == other.keys() and all(torch.equal(one[name], other[name]) for name in one)
    straight, resumed = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "killed"))
    assert straight["final_losses"] == resumed["final_losses"]
    assert _close(_untimed(straight), _untimed(resumed))
    assert not list(tmp_path.glob(".killed.checkpoint-*"))


# The CLI, with the micro codec registered as a preset so params.yaml can name it.


@pytest.fixture
def micro_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(presets.PRESETS, "micro", MICRO)


def _params_file(folder: Path, **codec: object) -> Path:
    section = {"preset": "micro", "steps": 3, "batch_size": 4, "segment_seconds": 0.5, "valid_clips": 2, **codec}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"sample_rate": SR}, "codec": section}))
    return path


def _run(*args: object):
    return CliRunner().invoke(stage.app, [str(arg) for arg in args])


def test_cli_trains_and_reports(corpus: Path, tmp_path: Path, micro_preset: None) -> None:
    augmented = _write_corpus(tmp_path / "augmented", ["train"] * 2, seed=1)
    out = tmp_path / "codec"
    result = _run("--params", _params_file(tmp_path), "--corpus", corpus, "--corpus", augmented, "--out", out)
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert str(out) in last and "SI-SNR" in last and "log-mel distance" in last and "untrained" in last
    assert "frame-rate template" in last
    assert EncodecModel.from_pretrained(out).config.codebook_size == MICRO.codec.codebook_size


def test_cli_help_explains_repeatable_corpus() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    assert "--corpus" in result.stdout and "Repeat" in result.stdout and "valid clips" in result.stdout


def _checkpoint(folder: Path, config: dict) -> str:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _bad_input(case: str, tmp_path: Path, corpus: Path) -> tuple[dict, Path]:
    """The codec section's overrides and the corpus folder for one kind of bad input."""
    match case:
        case "missing corpus":
            return {}, tmp_path / "missing"
        case "no valid clips":
            return {}, _write_corpus(tmp_path / "train-only", ["train"])
        case "bad steps":
            return {"steps": 0}, corpus
        case "bad checkpoint_every":
            return {"checkpoint_every": 0}, corpus
        case "unknown preset":
            return {"preset": "huge"}, corpus
        case "adversarial never starts":
            return {"adversarial": True, "adversarial_start": 3}, corpus
        case "pretrained missing":
            return {"pretrained": str(tmp_path / "nowhere")}, corpus
        case "pretrained not encodec":
            return {"pretrained": _checkpoint(tmp_path / "bert", {"model_type": "bert"})}, corpus
        case "pretrained wrong rate":
            config = {"model_type": "encodec", "sampling_rate": 24_000}
            return {"pretrained": _checkpoint(tmp_path / "24k", config)}, corpus
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing corpus", "does not exist"),
        ("no valid clips", "has no valid clips"),
        ("bad steps", "codec.steps"),
        ("bad checkpoint_every", "codec.checkpoint_every must be positive"),
        ("unknown preset", "codec.preset 'huge' is not a preset; known presets: tiny"),
        ("adversarial never starts", "codec.adversarial_start"),
        ("pretrained missing", "is not a directory"),
        ("pretrained not encodec", "not an EnCodec"),
        ("pretrained wrong rate", "24000 Hz"),
    ],
)
def test_cli_names_bad_inputs(corpus: Path, tmp_path: Path, micro_preset: None, case: str, message: str) -> None:
    codec, folder = _bad_input(case, tmp_path, corpus)
    result = _run("--params", _params_file(tmp_path, **codec), "--corpus", folder, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert not (tmp_path / "out").exists()


def test_cli_names_an_unreadable_checkpoint_and_no_resume_starts_over(
    corpus: Path, tmp_path: Path, micro_preset: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, out = _params_file(tmp_path, checkpoint_every=1), tmp_path / "codec"
    with pytest.MonkeyPatch.context() as patch:
        _stop_before(2, patch)
        assert isinstance(_run("--params", params, "--corpus", corpus, "--out", out).exception, _Killed)
    (_checkpoint_folder(out) / "last/state.pt").write_bytes(b"not a checkpoint")
    result = _run("--params", params, "--corpus", corpus, "--out", out)
    assert result.exit_code == 2 and result.output.startswith("error: codec checkpoint ")
    assert "unreadable" in result.output and "--no-resume" in result.output
    result = _run("--params", params, "--corpus", corpus, "--out", out, "--no-resume")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and not list(tmp_path.glob(".codec.checkpoint-*"))
