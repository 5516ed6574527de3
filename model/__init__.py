"""The musicops model library: presets, build/load/save, generation, streaming and audio I/O.

It imports nothing else of the project. Nothing here downloads: every weight comes from a local
directory or from a package's bundled files.
"""

import logging
import os

# No hub access, ever: every load is from disk (the registries are the only network here).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class _MusicgenSpecialTokenNotice(logging.Filter):
    # MusicGen's pad/start token is the codebook size, one past the vocabulary by design; transformers'
    # generic config check warns about it on every build and load.
    def filter(self, record: logging.LogRecord) -> bool:
        return "must be `None` or an integer within the vocabulary" not in record.getMessage()


# The per-tensor "Loading weights" bar is noise for models this size; progress that matters is ours.
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

for _name in ("transformers.configuration_utils", "transformers.models.musicgen.configuration_musicgen"):
    logging.getLogger(_name).addFilter(_MusicgenSpecialTokenNotice())

from model.errors import ModelInputError  # noqa: E402
from model.generator import Generation, MusicGenerator  # noqa: E402
from model.params import GenerationParams  # noqa: E402
from model.presets import PRESETS, Preset, get_preset  # noqa: E402

__all__ = [
    "PRESETS",
    "Generation",
    "GenerationParams",
    "ModelInputError",
    "MusicGenerator",
    "Preset",
    "get_preset",
]
