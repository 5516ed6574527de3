"""A GraphRunner that records which graphs a generator called, over a real one."""

from __future__ import annotations


class RecordingRunner:
    """A GraphRunner over another one that remembers which graphs were called (as a Triton runner would be)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def run(self, graph, inputs):
        self.calls.append(graph)
        return self.inner.run(graph, inputs)
