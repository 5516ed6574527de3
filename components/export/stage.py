"""The export stage: `export` writes every graph, checks it against torch at once, adds the INT8 variant
and publishes the folder whole (its layout: components/export/__init__.py); `main` is its command line."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from components.export.errors import ExportError, ParityError
from components.export.int8 import write_int8
from components.export.parallel import export_graphs, specs_of
from components.export.parity import CACHED_STEPS, GraphParity, _require, check_graph, parity_inputs
from components.export.writing import _copy_model_files, export_graph
from model.atomic_io import atomic_directory
from model.beat_grid import ONNX_INPUT as BEAT_GRID_INPUT
from model.beat_grid import beat_grid_of
from model.checkpoint import load_model
from model.errors import ModelInputError
from model.onnx_backend import CODEC_DECODER, DECODER, EXPORTED_GRAPHS, OrtRunner
from settings import paths
from settings.params import ExportParams, ParamsError, load_section

EXPORT_FILE, INT8_DIR = "export.json", "int8"


@dataclass
class ExportReport:
    """What `export` wrote and measured (export.json holds the same); `int8_*` are None without INT8."""

    out_dir: Path
    opset: int
    parity: dict[str, GraphParity]
    sizes: dict[str, int]
    int8_parity: dict[str, GraphParity] | None = None
    int8_sizes: dict[str, int] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _sizes(folder: Path) -> dict[str, int]:
    return {graph: sum(p.stat().st_size for p in folder.glob(f"{graph}.onnx*")) for graph in EXPORTED_GRAPHS}


def _manifest(report: ExportReport, model_dir: Path, card: Any, variant: str) -> dict[str, Any]:
    int8 = variant == "int8"
    parity = report.int8_parity if int8 else report.parity
    sizes = report.int8_sizes if int8 else report.sizes
    return {
        "format": "huggingface-optimum-musicgen",
        "variant": variant,
        "int8": int8,
        "quantization": (
            {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "weight_type": "QInt8",
                "per_channel": True,
                "op_types": ["MatMul", "Gemm"],
                "kept_fp32": [CODEC_DECODER],
            }
            if int8
            else None
        ),
        "opset": report.opset,
        "graphs": {
            graph: {"file": f"{graph}.onnx", "bytes": sizes[graph], "parity": asdict(parity[graph])}
            for graph in EXPORTED_GRAPHS
        },
        "parity_metric": "max |onnxruntime - torch| / max(1, max |torch|) over real inputs",
        "logits_layout": "[total_batch_size_x_num_codebooks, decoder_sequence_length, vocab]",
        "int8_folder": INT8_DIR if report.int8_parity is not None and not int8 else None,
        "source_model": str(model_dir.resolve()),
        "data_version": card.data_version,
        "preset": card.preset,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "notes": report.notes,
    }


def export(model_dir: Path, out_dir: Path, params: ExportParams) -> ExportReport:
    """Export the model in `model_dir` to `out_dir` (and `out_dir/int8`), each graph parity-checked."""
    params.check()
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, processor, card = load_model(model_dir)
    beat_grid = beat_grid_of(model.decoder)
    grid_frame_rate = None if beat_grid is None else beat_grid.frame_rate
    data = parity_inputs(model, processor, card, params)
    layers = model.config.decoder.num_hidden_layers
    report = ExportReport(out_dir=out_dir, opset=params.opset, parity={}, sizes={})
    if grid_frame_rate is not None:
        report.notes.append(f"the decoder graphs take a beat grid's features ({BEAT_GRID_INPUT}; beat_grid.json)")
    report.notes.append(
        "no codec encoder graph (Optimum has none, and torch.export cannot trace EnCodec's length-dependent "
        "strided padding): continuing an audio prompt needs the torch backend"
    )
    specs = specs_of(model, processor)
    with atomic_directory(out_dir) as staging:
        if params.workers > 1:
            export_graphs(specs, model_dir, staging, params.opset, params.workers)
        for graph, spec in specs.items():
            if params.workers == 1:  # in this process, checked at once: a failure stops the later graphs
                export_graph(graph, spec, staging / f"{graph}.onnx", params.opset)
            runner = OrtRunner(staging, graphs=(DECODER, graph) if graph in CACHED_STEPS else (graph,))
            report.parity[graph] = check_graph(runner, graph, data, layers, params.tolerance)
            _require(graph, report.parity[graph], "fp32")
        _copy_model_files(model_dir, staging, grid_frame_rate)
        report.sizes = _sizes(staging)
        if params.int8:
            report.int8_parity = write_int8(
                staging, staging / INT8_DIR, model_dir, data, layers, params, grid_frame_rate
            )
            report.int8_sizes = _sizes(staging / INT8_DIR)
        report.seconds = time.perf_counter() - started
        (staging / EXPORT_FILE).write_text(json.dumps(_manifest(report, model_dir, card, "fp32"), indent=2) + "\n")
        if params.int8:
            manifest = _manifest(report, model_dir, card, "int8")
            (staging / INT8_DIR / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its export section.")] = paths.PARAMS,
    model: Annotated[Path, typer.Option(help="The model directory (train's output).")] = paths.MODEL,
    out: Annotated[Path, typer.Option(help="Output folder: ONNX graphs, config, tokenizer, export.json.")] = paths.ONNX,
) -> None:
    """Export the model to ONNX in Optimum's MusicGen layout, each graph checked against torch."""
    try:
        report = export(model, out, load_section(params, "export"))
    except ParityError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    except (ParamsError, ModelInputError, ExportError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    worst = ", ".join(f"{graph} {p.relative:.1e}" for graph, p in report.parity.items())
    typer.echo(f"exported {len(report.parity)} graphs to {out} in {report.seconds:.0f} s; parity (relative): {worst}")
    if report.int8_parity is not None:
        worst = ", ".join(f"{graph} {p.relative:.1e}" for graph, p in report.int8_parity.items())
        typer.echo(f"int8 graphs in {out / INT8_DIR}; parity vs torch (relative): {worst}")
