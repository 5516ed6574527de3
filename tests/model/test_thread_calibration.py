"""Thread calibration: the fastest count is measured once per machine and model, cached, and overridable."""

from __future__ import annotations

import json

import pytest

from model import OnnxMusicGenerator
from model.errors import ModelInputError
from model.thread_calibration import THREADS_ENV, cache_file, calibrated_threads, candidates


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICOPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(THREADS_ENV, raising=False)


def test_candidates_are_powers_of_two_up_to_the_cores_and_the_cores():
    assert candidates(1) == [1]
    assert candidates(2) == [1, 2]
    assert candidates(6) == [1, 2, 4, 6]


def test_the_fastest_count_is_kept_and_measured_only_once():
    timings = {1: 0.004, 2: 0.002, 4: 0.003}
    asked = []

    def measure(threads):
        asked.append(threads)
        return timings[threads]

    assert calibrated_threads("model a", measure, cores=4) == 2
    assert asked == [1, 2, 4]
    assert calibrated_threads("model a", measure, cores=4) == 2 and asked == [1, 2, 4]  # from the cache
    cached = json.loads(cache_file().read_text())
    (entry,) = cached
    assert entry.endswith("| model a") and cached[entry]["threads"] == 2
    # Another model is measured on its own.
    assert calibrated_threads("model b", lambda n: {1: 0.001, 2: 0.002, 4: 0.003}[n], cores=4) == 1


def test_a_damaged_cache_is_measured_again(tmp_path):
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    assert calibrated_threads("m", lambda n: 1.0 / n, cores=2) == 2
    assert json.loads(cache_file().read_text())  # rewritten whole


def test_the_environment_overrides_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert calibrated_threads("m", lambda n: pytest.fail("measured despite the override")) == 3
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ModelInputError, match=r"MUSICOPS_THREADS must be a positive whole number.*'many'"):
        calibrated_threads("m", lambda n: 1.0)


def test_an_onnx_export_loads_with_its_calibrated_count(micro_export):
    generator = OnnxMusicGenerator.load(micro_export.out_dir)
    cached = json.loads(cache_file().read_text())
    (entry,) = cached
    assert "| onnx " in entry and set(cached[entry]["seconds_per_step"]) == {str(n) for n in candidates()}
    chosen = cached[entry]["threads"]
    sessions = generator.runner.sessions.values()
    assert all(session.get_session_options().intra_op_num_threads == chosen for session in sessions)
    # An explicit count is used as given, and nothing is measured for it.
    pinned = OnnxMusicGenerator.load(micro_export.out_dir / "int8", threads=1)
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in pinned.runner.sessions.values())
    assert len(json.loads(cache_file().read_text())) == 1
