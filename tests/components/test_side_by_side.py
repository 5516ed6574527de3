"""The evaluation's baselines generate two at a time on one torch thread each."""

from __future__ import annotations

import threading

import pytest
import torch

from components.evaluation.side_by_side import side_by_side


def test_jobs_run_together_on_one_thread_each_and_threads_are_restored():
    before = torch.get_num_threads()
    meet = threading.Barrier(2, timeout=10)  # only two jobs running at once get past it

    def job(name):
        def run():
            meet.wait()
            return name, torch.get_num_threads()

        return run

    results = side_by_side({"a": job("a"), "b": job("b")})
    assert results == {"a": ("a", 1), "b": ("b", 1)}
    assert torch.get_num_threads() == before


def test_a_failing_job_raises_and_threads_are_restored():
    before = torch.get_num_threads()

    def fail():
        raise ValueError("no model")

    with pytest.raises(ValueError, match="no model"):
        side_by_side({"ok": lambda: 1, "bad": fail})
    assert torch.get_num_threads() == before


def test_a_single_job_keeps_every_thread():
    threads = torch.get_num_threads()
    assert side_by_side({"only": torch.get_num_threads}) == {"only": threads}
