"""The graphs of one model exported side by side. torch's dynamo exporter traces and decomposes each graph in
Python, on one core, for 10-15 s even at micro size; so with `export.workers` above 1 the graphs are shared out
between this process and `export.workers - 1` worker processes (`python -m components.export.parallel`), each
of which loads the model once and writes its share. They are plain subprocesses, not multiprocessing's:
spawning would run the caller's main script again in each worker, and forking a process whose torch has
started its thread pools can deadlock. The parity checks stay in the calling process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from components.export.errors import ExportError
from components.export.graphs import GraphSpec, graph_specs
from components.export.parity import PROMPTS
from components.export.writing import export_graph

_ROOT = Path(__file__).resolve().parents[2]  # the project, importable in the workers


def specs_of(model: Any, processor: Any) -> dict[str, GraphSpec]:
    """The graphs to export, traced with two real prompts of different lengths."""
    example = processor.tokenizer(PROMPTS[:2], padding=True, return_tensors="pt", return_token_type_ids=False)
    # padded: with an all-ones example mask the exporter could drop the mask input
    return graph_specs(model, example["input_ids"], example["attention_mask"])


def export_graphs(specs: dict[str, GraphSpec], model_dir: Path, folder: Path, opset: int, workers: int) -> None:
    """Write each graph of `specs` (the model in `model_dir`) to `folder`/<graph>.onnx: `workers - 1` worker
    processes take the first graphs, a few each, while this process, which has the model loaded already, writes
    the rest; ExportError with the first failure's message."""
    graphs = list(specs)
    each = len(graphs) // workers  # this process takes the remainder too: the workers first load the model
    shares = [graphs[i * each : (i + 1) * each] for i in range(workers - 1) if each]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "components.export.parallel", str(model_dir), str(folder), str(opset)]
    running = [
        subprocess.Popen([*command, *share], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for share in shares
    ]
    try:
        for graph in graphs[each * len(shares) :]:
            export_graph(graph, specs[graph], folder / f"{graph}.onnx", opset)
        for worker in running:
            stderr = worker.communicate()[1]
            if worker.returncode != 0:
                lines = [line for line in stderr.splitlines() if line.strip()]
                raise ExportError(lines[-1] if lines else f"an export worker exited with status {worker.returncode}")
    finally:
        for worker in running:
            worker.kill()  # after a failure here: the workers' graphs would not be published anyway
            worker.wait()


def _worker(model_dir: str, folder: str, opset: str, *graphs: str) -> None:
    from model.checkpoint import load_model

    model, processor, _ = load_model(Path(model_dir))
    specs = specs_of(model, processor)
    for graph in graphs:
        try:
            export_graph(graph, specs[graph], Path(folder) / f"{graph}.onnx", int(opset))
        except ExportError as error:
            sys.exit(str(error))  # the parent reads this last line


if __name__ == "__main__":
    _worker(*sys.argv[1:])
