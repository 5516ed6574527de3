"""Hot reload (serving/reload.py): the front serving a promoted folder takes a newly promoted model between requests,
losing none, and turns away a broken one while the old model serves on.

The end-to-end tests run the real front under uvicorn on 127.0.0.1 over a folder that `promote` (the gate's own
function, as `musicops promote` calls it) replaces atomically, while a thread streams requests with a fixed seed.
The first model can pause a stream after its first chunk, so "a request is in flight during the swap" never depends
on timing.
"""

import asyncio
import base64
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from components.evaluation.gate import promote
from model.build import build_model
from model.checkpoint import ModelCard, save_model
from model.generation_params import GenerationParams
from model.generator import BaseMusicGenerator
from model.loader import load_generator
from musicops.cli import app
from serving.engine import GenerationEngine
from serving.front.app import create_app, serve_in_thread
from serving.reload import ModelReloader, ReloadRefused, fingerprint
from serving.sources import LocalSource
from settings.params import ServeSettings
from tests.conftest import MICRO
from tests.serving.test_front import wait_for

SEED, DURATION = 7, 1.5  # every request: one prompt and seed (one model answers alike), several chunks
INTERVAL_S = 0.1  # checks of the folder; the waits below allow far more


class PausingGenerator(BaseMusicGenerator):
    """A real generator whose streams stop after their first chunk while `go` is clear; `paused` says one has."""

    def __init__(self, inner: BaseMusicGenerator) -> None:
        self.inner, self.card, self.sample_rate = inner, inner.card, inner.sample_rate
        self.go, self.paused = threading.Event(), threading.Event()
        self.go.set()

    def stream(self, prompts: list[str], params: GenerationParams, progress=None, **chunking: int) -> Iterator:
        for index, chunk in enumerate(self.inner.stream(prompts, params, progress, **chunking)):
            yield chunk
            if index == 0 and not self.go.is_set():
                self.paused.set()
                self.go.wait()


@dataclass
class Answer:
    """One streamed request as the client saw it."""

    started: float
    ended: float
    status: int
    kinds: list[str]
    samples: int
    audio: str  # a hash of the PCM bytes
    model: str | None


def stream_once(url: str) -> Answer:
    started, kinds, pcm, stats = time.monotonic(), [], b"", {}
    query = {"prompt": "reload", "duration": DURATION, "seed": SEED}
    with httpx.stream("GET", f"{url}/v1/generate/stream", params=query, timeout=60) as answer:
        event = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                kinds.append(event)
            elif line.startswith("data: ") and event == "chunk":
                pcm += base64.b64decode(line[6:])
            elif line.startswith("data: ") and event == "stats":
                stats = json.loads(line[6:])
    digest = hashlib.sha256(pcm).hexdigest()
    return Answer(started, time.monotonic(), answer.status_code, kinds, len(pcm) // 2, digest, stats.get("model"))


class Traffic:
    """Streams requests one after another from a thread until stopped; every answer is kept, failures too."""

    def __init__(self, url: str) -> None:
        self.url, self.answers, self.errors = url, [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers.append(stream_once(self.url))
            except Exception as error:  # a failed request is what the test looks for: keep it
                self.errors.append(repr(error))

    def served_by(self, model: str | None) -> list[Answer]:
        return [answer for answer in list(self.answers) if answer.model == model]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(120)


@pytest.fixture(scope="module")
def second_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another micro model: the same shapes, other weights (a retrained model)."""
    model, processor = build_model(MICRO, seed=1)
    directory = tmp_path_factory.mktemp("models") / "second"
    return save_model(model, processor, directory, ModelCard.for_preset(MICRO, data_version="retrained"))


@pytest.fixture
def evaluation(tmp_path: Path) -> Path:
    """An evaluation whose decision lets `promote` go ahead."""
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "decision.json").write_text(json.dumps({"promote": True, "checks": []}))
    return folder


def info(url: str) -> dict:
    return httpx.get(f"{url}/v1/info", timeout=10).json()["model"]


def reload_count(url: str, outcome: str) -> float:
    prefix = f'musicops_front_model_reloads_total{{outcome="{outcome}"}} '
    lines = [line for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[1]) if lines else -1.0


def assert_all_whole(traffic: Traffic, sample_rate: int) -> None:
    assert traffic.errors == []
    assert traffic.answers, "no request was answered"
    for answer in traffic.answers:
        assert answer.status == 200 and answer.kinds[0] == "header" and answer.kinds[-1] == "stats", answer
        assert "error" not in answer.kinds and answer.samples == round(DURATION * sample_rate), answer


@pytest.mark.e2e
def test_a_promoted_model_replaces_the_serving_one_between_requests_and_none_fails(
    micro_dir, second_dir, evaluation, tmp_path
):
    promoted = promote(micro_dir, evaluation, tmp_path / "promoted")
    source = LocalSource(promoted / "model", reload_interval_s=INTERVAL_S)
    # The first model pauses a stream on demand, so one is surely in flight while the new model comes in.
    pausing = PausingGenerator(source.generator)
    source.engine = GenerationEngine(pausing)
    with serve_in_thread(create_app(source)) as url:
        first = info(url)
        assert first["fingerprint"] == fingerprint(promoted / "model") and first["path"] == str(promoted / "model")
        traffic = Traffic(url)
        try:
            wait_for(lambda: len(traffic.answers) >= 2, "answers from the first model")
            pausing.go.clear()
            wait_for(pausing.paused.is_set, "a stream paused on the first model")
            promote(second_dir, evaluation, promoted)
            wait_for(lambda: info(url)["fingerprint"] != first["fingerprint"], "the new model to serve")
            swapped = time.monotonic()
            pausing.go.set()  # the stream in flight goes on, on the model it started with
            second = info(url)
            wait_for(lambda: len(traffic.served_by(second["fingerprint"])) >= 2, "answers from the new model")
        finally:
            pausing.go.set()
            traffic.finish()
        assert reload_count(url, "loaded") == 1.0 and reload_count(url, "refused") == 0.0
    assert_all_whole(traffic, source.sample_rate)
    assert second["fingerprint"] == fingerprint(promoted / "model") and second["data_version"] == "retrained"
    assert second["loaded_at"] >= first["loaded_at"]
    models = [answer.model for answer in traffic.answers]
    assert set(models) == {first["fingerprint"], second["fingerprint"]}
    # One handover: the old model's answers, then the new one's, never back.
    assert models == sorted(models, key=lambda model: model == second["fingerprint"])
    old, new = traffic.served_by(first["fingerprint"]), traffic.served_by(second["fingerprint"])
    assert any(answer.ended > swapped for answer in old), "no request in flight finished on the old model"
    assert all(answer.model == second["fingerprint"] for answer in traffic.answers if answer.started > swapped)
    # A fixed seed: each model always gives the same audio, and the two models different audio.
    assert len({answer.audio for answer in old}) == 1 and len({answer.audio for answer in new}) == 1
    assert old[0].audio != new[0].audio


@pytest.mark.e2e
def test_a_broken_replacement_is_refused_and_the_old_model_serves_on(
    micro_dir, second_dir, evaluation, tmp_path, caplog
):
    promoted = promote(micro_dir, evaluation, tmp_path / "promoted")
    half_written, wrong_shape = tmp_path / "half-written", tmp_path / "wrong-shape"
    for folder in (half_written, wrong_shape):
        shutil.copytree(micro_dir, folder)
    weights = half_written / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((wrong_shape / "config.json").read_text())
    config["decoder"]["ffn_dim"] //= 2  # the weights no longer fit the layers
    (wrong_shape / "config.json").write_text(json.dumps(config))
    source = LocalSource(promoted / "model", reload_interval_s=INTERVAL_S)
    caplog.set_level(logging.INFO, logger="serving.reload")
    with serve_in_thread(create_app(source)) as url:
        first = info(url)
        traffic = Traffic(url)
        try:
            wait_for(lambda: len(traffic.answers) >= 1, "an answer from the first model")
            for refused, broken in enumerate((half_written, wrong_shape), start=1):
                promote(broken, evaluation, promoted)
                wait_for(lambda: reload_count(url, "refused") == refused, f"the {broken.name} model to be refused")  # noqa: B023
                served = len(traffic.answers)
                wait_for(lambda: len(traffic.answers) >= served + 2, "answers after the refusal")  # noqa: B023
                assert info(url) == first  # the old model, loaded once, still serves
            # The refusal is not sticky: the next good model comes in.
            promote(second_dir, evaluation, promoted)
            wait_for(lambda: info(url)["fingerprint"] == fingerprint(promoted / "model"), "the good model to serve")
            second = info(url)["fingerprint"]
            wait_for(lambda: len(traffic.served_by(second)) >= 1, "an answer from the good model")
        finally:
            traffic.finish()
        assert reload_count(url, "loaded") == 1.0 and reload_count(url, "refused") == 2.0
    assert_all_whole(traffic, source.sample_rate)
    assert {answer.model for answer in traffic.answers} == {first["fingerprint"], second}
    refusals = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(refusals) == 2 and all(str(promoted / "model") in message for message in refusals)
    assert all("does not load" in message for message in refusals) and "mismatched" in refusals[1]


# -- the parts, without a server -----------------------------------------------------------------------------------


def test_the_fingerprint_changes_when_promote_replaces_the_folder_and_is_none_while_it_is_missing(
    micro_dir, evaluation, tmp_path
):
    promoted = promote(micro_dir, evaluation, tmp_path / "promoted")
    before = fingerprint(promoted / "model")
    assert before is not None and fingerprint(promoted / "model") == before  # untouched: stable
    promote(micro_dir, evaluation, promoted)  # the very same files, newly copied: a new promotion
    assert fingerprint(promoted / "model") not in (None, before)
    assert fingerprint(tmp_path / "missing") is None


def test_a_model_replaced_while_it_loads_is_loaded_again_not_served(micro_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(micro_dir, folder)
    swapped, loads = [], []

    def load(path: Path) -> str:
        loads.append(path)
        if len(loads) == 1:  # another copy lands while the first load reads the files
            (path / "musicops.json").touch()
            time.sleep(0.01)
            (path / "musicops.json").write_text((micro_dir / "musicops.json").read_text())
        return f"model {len(loads)}"

    async def checks() -> list[bool]:
        reloader = ModelReloader(folder, load, lambda model, version: swapped.append((model, version)), 1.0, "old")
        return [await reloader.check(), await reloader.check(), await reloader.check()]

    assert asyncio.run(checks()) == [False, True, False]  # dropped, loaded again and served, then nothing new
    assert [model for model, _ in swapped] == ["model 2"]
    assert swapped[0][1].fingerprint == fingerprint(folder)


def test_a_folder_swapped_while_its_files_are_listed_has_no_fingerprint(micro_dir, evaluation, tmp_path, monkeypatch):
    promoted = promote(micro_dir, evaluation, tmp_path / "promoted")
    listing = Path.rglob

    def rglob_during_a_promotion(self: Path, pattern: str):
        found = list(listing(self, pattern))  # the old folder's files ...
        monkeypatch.setattr(Path, "rglob", listing)  # (promote lists files too)
        promote(micro_dir, evaluation, promoted)  # ... and then the new folder replaces it
        return iter(found)

    monkeypatch.setattr(Path, "rglob", rglob_during_a_promotion)
    assert fingerprint(promoted / "model") is None


def test_a_load_that_fails_while_the_folder_changes_is_retried_not_refused(micro_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(micro_dir, folder)
    loads: list[Path] = []

    def load(path: Path) -> str:
        loads.append(path)
        if len(loads) == 1:  # the copy lands mid-read: the failure says nothing about the new model
            (path / "musicops.json").touch()
            time.sleep(0.01)
            (path / "musicops.json").write_text((micro_dir / "musicops.json").read_text())
            raise ValueError("truncated weights")
        return "model 2"

    async def checks() -> tuple[list[bool], dict]:
        reloader = ModelReloader(folder, load, lambda model, version: None, 1.0, "old")
        return [await reloader.check(), await reloader.check()], reloader.counts

    outcomes, counts = asyncio.run(checks())
    assert outcomes == [False, True] and counts["refused"] == 0 and counts["loaded"] == 1


def test_a_model_of_another_sample_rate_is_refused_by_the_source(micro_dir):
    other = load_generator(micro_dir)
    other.sample_rate = 16000

    async def swap() -> None:
        source = LocalSource(micro_dir)
        try:
            source.swap(other, source.version)
        finally:
            await source.close()

    with pytest.raises(ReloadRefused, match="16000 Hz audio and the serving model 32000 Hz"):
        asyncio.run(swap())


def test_musicops_serve_passes_its_reload_interval_to_the_front_and_0_turns_reloading_off(micro_dir, monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr("serving.local.serve_locally", lambda *args, **options: calls.append(options))
    for interval in (["--reload-interval", "0.5"], [], ["--reload-interval", "0"]):
        result = CliRunner().invoke(app, ["serve", "--model", str(micro_dir), "--no-log", *interval])
        assert result.exit_code == 0, result.output
    assert [options["reload_interval_s"] for options in calls] == [0.5, ServeSettings.reload_interval_s, 0.0]
    assert LocalSource(micro_dir, reload_interval_s=0.0).reloader is None
    watched = LocalSource(micro_dir, reload_interval_s=0.5).reloader
    assert watched is not None and watched.folder == micro_dir and watched.interval_s == 0.5
