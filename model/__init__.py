"""The musicops model library: presets, build/load/save, generation, streaming, audio I/O and features.

It imports nothing else of the project. Nothing here downloads: every weight comes from a local
directory or from a package's bundled files. The public names below load lazily, so importing a
light module (`model.audio`) does not pull in torch and transformers.
"""

import importlib
import logging
import os
from typing import Any

# No hub access, ever: every load is from disk (the registries are the only network here).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class _MusicgenSpecialTokenNotice(logging.Filter):
    # MusicGen's pad/start token is the codebook size, one past the vocabulary by design; transformers'
    # generic config check warns about it on every build and load.
    def filter(self, record: logging.LogRecord) -> bool:
        return "must be `None` or an integer within the vocabulary" not in record.getMessage()


for _name in ("transformers.configuration_utils", "transformers.models.musicgen.configuration_musicgen"):
    logging.getLogger(_name).addFilter(_MusicgenSpecialTokenNotice())

_EXPORTS = {
    "ModelInputError": "model.errors",
    "Generation": "model.generator",
    "MusicGenerator": "model.generator",
    "load_generator": "model.loader",
    "OnnxMusicGenerator": "model.onnx_backend",
    "GenerationParams": "model.generation_params",
    "PRESETS": "model.presets",
    "Preset": "model.presets",
    "get_preset": "model.presets",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
