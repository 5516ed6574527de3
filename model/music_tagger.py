"""Music tags of audio from the pretrained musicnn (model/musicnn.py), for evaluation to ask what a clip sounds like.

`MusicnnTagger.tags` gives a clip's mean tag probabilities over its 3 s patches (musicnn's taggram averaged,
as musicnn's own `top_tags` does); `genre_in_top` says whether a genre of the rendered corpus is among the
clip's k most likely tags, or None when the tagger has no tag for that genre (MSD_musicnn has no classical
and no reggae tag). `embeddings` are the penultimate features the "musicnn" FAD embedder uses.

The network runs once per clip: its outputs for the last clips seen are kept (keyed by the audio's bytes), so an
evaluation that embeds a clip for FAD and then reads its tags pays for one pass.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from model.audio_input import mono_at
from model.errors import ModelInputError
from model.musicnn import DEFAULT_MODEL, MIN_SAMPLES, SAMPLE_RATE, load_musicnn, log_mel_patches, tag_names

# The corpus's genres (components/corpus/genres.py) as each model's tag names; None: the model has no such tag.
GENRE_TAGS: dict[str, dict[str, str | None]] = {
    "MSD_musicnn": {
        "jazz": "jazz",
        "rock": "rock",
        "pop": "pop",
        "classical": None,
        "electronic": "electronic",
        "ambient": "ambient",
        "hip hop": "Hip-Hop",
        "folk": "folk",
        "reggae": None,
        "blues": "blues",
    },
    "MTT_musicnn": {
        "jazz": None,
        "rock": "rock",
        "pop": "pop",
        "classical": "classical",
        "electronic": "electronic",
        "ambient": "ambient",
        "hip hop": None,
        "folk": None,
        "reggae": None,
        "blues": None,
    },
}


class MusicnnTagger:
    """A pretrained musicnn (MSD_musicnn by default, 50 tags) on mono float audio at any sample rate."""

    batch_patches = 16  # bounds activation memory on long clips (a patch's front-end maps are ~25 MB)
    remembered = 1024  # clips whose outputs are kept (a 10 s clip's: ~3 kB)

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.model = model
        self.network = load_musicnn(model)
        self.tag_names = tag_names(model)
        self._seen: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _outputs(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Tag probabilities [patches, tags] and penultimate features [patches, 200], float32."""
        audio = np.ascontiguousarray(audio)
        key = (hashlib.sha1(audio.tobytes() + f"{audio.shape}{audio.dtype}".encode()).hexdigest(), sample_rate)
        if key not in self._seen:
            outputs = self._run(audio, sample_rate)
            for array in outputs:
                array.setflags(write=False)  # shared by every caller that asks for this clip
            self._seen[key] = outputs
            if len(self._seen) > self.remembered:
                self._seen.popitem(last=False)
        return self._seen[key]

    def _run(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        audio = mono_at(audio, sample_rate, SAMPLE_RATE, MIN_SAMPLES, "musicnn")
        patches = torch.from_numpy(log_mel_patches(audio))
        probabilities, features = [], []
        with torch.inference_mode():
            for start in range(0, len(patches), self.batch_patches):
                logits, penultimate = self.network(patches[start : start + self.batch_patches])
                probabilities.append(torch.sigmoid(logits))
                features.append(penultimate)
        return torch.cat(probabilities).numpy(), torch.cat(features).numpy()

    def taggram(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Tag probabilities per 3 s patch [patches, tags]; audio of at least 2.976 s (one patch)."""
        return self._outputs(audio, sample_rate)[0]

    def embeddings(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Penultimate features per 3 s patch [patches, 200]: the dense layer before the tag logits."""
        return self._outputs(audio, sample_rate)[1]

    def tags(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mean tag probabilities over the clip's patches [tags], in `tag_names` order."""
        return self.taggram(audio, sample_rate).mean(axis=0)

    def top_tags(self, tags: np.ndarray, k: int = 5) -> list[str]:
        """The names of the k most likely tags of a `tags` vector, most likely first."""
        return [self.tag_names[i] for i in np.argsort(-np.asarray(tags), kind="stable")[:k]]

    def genre_tag(self, genre: str) -> str | None:
        """This tagger's tag for a corpus genre, or None when it has none; ModelInputError for an unknown genre."""
        table = GENRE_TAGS[self.model]
        if genre not in table:
            raise ModelInputError(f"unknown genre {genre!r}; the musicnn tagger maps {', '.join(table)}")
        return table[genre]

    def has_tag_for(self, genre: str) -> bool:
        """Whether this tagger has a tag for `genre` (False for genres it has none for, and for unknown ones)."""
        return GENRE_TAGS[self.model].get(genre) is not None

    def genre_in_top(self, tags: np.ndarray, genre: str, k: int = 5) -> bool | None:
        """Whether `genre` is among the k most likely tags of a `tags` vector; None when the tagger lacks it."""
        tag = self.genre_tag(genre)
        return None if tag is None else tag in self.top_tags(tags, k)
