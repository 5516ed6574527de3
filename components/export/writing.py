"""Writing the export folder's files: one graph with torch's dynamo exporter (axes named as Optimum names
them), and the model's own files beside the graphs so that the folder generates on its own."""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from components.export.errors import ExportError
from components.export.graphs import GraphSpec
from model.beat_grid import write_onnx_note
from model.errors import first_line

# Weights and their index files are what the export replaces; every other file of the model folder
# (configs, tokenizer, processor, card) is copied so the export generates on its own.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")


@contextlib.contextmanager
def _quiet_logger(logger: logging.Logger, level: int) -> Iterator[None]:
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter warns about optional torchvision ops and tracing details that do not apply here.
    with (
        _quiet_logger(logging.getLogger("torch.onnx._internal.exporter._registration"), logging.ERROR),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def _rename_dims(path: Path, names: dict[str, str], large: bool) -> None:
    """Give derived axes Optimum's names (the exporter writes e.g. '4*total_batch_size')."""
    import onnx

    proto = onnx.load(str(path))
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    for stale in path.parent.glob(f"{path.name}.data"):
        stale.unlink()
    onnx.save(proto, str(path), save_as_external_data=large, location=f"{path.name}.data")


def export_graph(graph: str, spec: GraphSpec, path: Path, opset: int) -> None:
    """Write one graph with torch's dynamo exporter, axes named as Optimum names them."""
    module = spec.module.eval()
    # Graphs past 2 GB cannot be one protobuf: their weights go to a .data file beside them.
    large = sum(t.numel() * t.element_size() for t in module.state_dict().values()) > 1_500_000_000
    try:
        with _quiet_exporter(), spec.patch(), torch.no_grad():
            program = torch.onnx.export(
                module,
                spec.example,
                dynamo=True,
                opset_version=opset,
                optimize=spec.optimize,
                verbose=False,
                input_names=spec.inputs,
                output_names=spec.outputs,
                dynamic_shapes=spec.dynamic_shapes,
                custom_translation_table=spec.translations or None,
            )
            program.save(str(path), external_data=large)
    except Exception as error:  # a boundary: the exporter's failures are long; name the graph first
        reason = first_line(error)
        raise ExportError(f"exporting {graph} failed: {reason}") from error
    finally:
        module.eval()  # the exporter can leave modules in training mode
    _rename_dims(path, spec.renames, large)


def _copy_model_files(model_dir: Path, folder: Path, grid_frame_rate: float | None) -> None:
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, folder / path.name)
    if grid_frame_rate is not None:  # the grid's weights are in the decoder graphs; its frame rate is here
        write_onnx_note(folder, grid_frame_rate)
