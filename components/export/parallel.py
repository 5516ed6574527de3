"""The graphs of one model exported side by side. torch's dynamo exporter traces and decomposes each graph in
Python, on one core, for 10-15 s even at micro size; so with `export.workers` above 1 each graph is a job for
a pool of worker processes, each of which loads the model once. Workers are spawned, not forked: forking a
process whose torch has started its thread pools can deadlock. The parity checks stay in the calling process.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from components.export.graphs import GraphSpec, graph_specs
from components.export.parity import PROMPTS
from components.export.writing import export_graph
from model.checkpoint import load_model

_specs: dict[str, GraphSpec] = {}  # a worker's graphs, built once by `_load`


def specs_of(model: Any, processor: Any) -> dict[str, GraphSpec]:
    """The graphs to export, traced with two real prompts of different lengths."""
    example = processor.tokenizer(PROMPTS[:2], padding=True, return_tensors="pt", return_token_type_ids=False)
    # padded: with an all-ones example mask the exporter could drop the mask input
    return graph_specs(model, example["input_ids"], example["attention_mask"])


def _load(model_dir: str) -> None:
    model, processor, _ = load_model(Path(model_dir))
    _specs.update(specs_of(model, processor))


def _export(graph: str, path: str, opset: int) -> str:
    export_graph(graph, _specs[graph], Path(path), opset)
    return graph


def export_graphs(model_dir: Path, graphs: list[str], folder: Path, opset: int, workers: int) -> None:
    """Write each of `graphs` of the model in `model_dir` to `folder`/<graph>.onnx with `workers` processes;
    the first failure (an ExportError naming its graph) is raised once every job has ended."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_load, initargs=(str(model_dir),)) as pool:
        jobs = [pool.submit(_export, graph, str(folder / f"{graph}.onnx"), opset) for graph in graphs]
        for job in jobs:
            job.result()
