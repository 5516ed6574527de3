"""The features the request log and the reference set hold: one prompt's and one clip's, as monitoring/schema.py
names them.

- `prompt_statistics(prompt)`: language-agnostic text statistics, and the tempo ("92 BPM") or key ("in D minor",
  "F# major") the prompt names, spelt as model.music_features.key_name spells keys (the corpus captions' spelling).
- `TextEncoder`: mean-pooled sentence embeddings from the model's own (frozen) text encoder, loaded from a model
  directory's weights alone (no decoder, no codec), from an ONNX export's text_encoder.onnx, or from a Hugging Face
  encoder directory ("minilm" for the bundled all-MiniLM-L6-v2).
- `PromptProjection`: the reference prompts' mean and first principal components, so a prompt's embedding becomes
  PROMPT_EMBEDDING_COMPONENTS numbers a drift test can compare.
- `audio_row(audio, sample_rate)`: model.audio_quality's features of the clip's opening AUDIO_WINDOW_S seconds (so
  clips of any requested length compare like with like), the estimated key, and an evenly spaced sample of up to
  MEL_FRAMES log-mel frames (float16 bytes) of the whole clip from which a window of traffic gets a Fréchet distance.

Cost per 10 s clip at 32 kHz on this 2-core machine: 0.33 s idle (features 0.23 s, key 0.09 s, mel 4 ms), about
0.5 s with the machine busy; the first clip in a process takes ~4 s more (librosa's numba compilation).
Embedding prompts costs ~25 ms for one, ~0.7 s for a batch of 32 (MiniLM).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.errors import ModelInputError
from model.music_features import estimate_key, key_name
from monitoring.schema import AUDIO_WINDOW_S, MEL_FRAMES, PROMPT_EMBEDDING_COMPONENTS

if TYPE_CHECKING:
    from model.embedders import Embedder

# -- prompts -------------------------------------------------------------------------------------------------------

# "92 BPM", "92bpm", "92-bpm", "92.5 beats per minute"; a number out of this range is not a tempo.
_TEMPO = re.compile(r"(\d{2,3}(?:\.\d+)?)\s*-?\s*(?:bpm|beats per minute)\b", re.IGNORECASE)
TEMPO_RANGE = (20.0, 400.0)
# "D minor", "F# major", "B-flat major", "Eb minor", "C sharp minor". The tonic letter must be upper case: "a minor
# change" is English, not A minor.
_KEY = re.compile(r"\b([A-G])(#|♯|b|♭|[-\s]?(?i:sharp|flat))?\s+(?i:(major|minor))\b")
_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def prompt_tempo(prompt: str) -> float | None:
    """The tempo a prompt names in BPM ("92 BPM", "92bpm"), or None."""
    for match in _TEMPO.finditer(prompt):
        tempo = float(match.group(1))
        if TEMPO_RANGE[0] <= tempo <= TEMPO_RANGE[1]:
            return tempo
    return None


def prompt_key(prompt: str) -> str | None:
    """The key a prompt names, spelt as key_name spells it ("F# major" -> "F-sharp major"), or None."""
    match = _KEY.search(prompt)
    if match is None:
        return None
    letter, accidental, mode = match.groups()
    shift = 0
    if accidental:
        shift = 1 if accidental in "#♯" or accidental.lower().endswith("sharp") else -1
    return key_name(_NATURAL[letter] + shift, mode.lower())


def prompt_statistics(prompt: str) -> dict[str, Any]:
    """The prompt columns other than the embedding: sizes, character shares, and a named tempo and key.

    Words are whitespace-separated runs (a Japanese prompt without spaces is one word: its non-ASCII share says
    what it is). The upper-case share counts among cased letters only, so scripts without case give 0.
    """
    chars = len(prompt)
    cased = [c for c in prompt if c.isupper() or c.islower()]
    return {
        "prompt_chars": chars,
        "prompt_words": len(prompt.split()),
        "prompt_digit_share": sum(c.isdigit() for c in prompt) / chars if chars else 0.0,
        "prompt_non_ascii_share": sum(not c.isascii() for c in prompt) / chars if chars else 0.0,
        "prompt_upper_share": sum(c.isupper() for c in cased) / len(cased) if cased else 0.0,
        "prompt_tempo_bpm": prompt_tempo(prompt),
        "prompt_key": prompt_key(prompt),
    }


class TextEncoder:
    """Sentence embeddings [n, hidden] float32: the text encoder's last hidden states, mean-pooled over the prompt's
    tokens and L2-normalised (all-MiniLM-L6-v2's own recipe, and harmless for T5).

    Build it with `from_model_dir` (the encoder a MusicGen directory or ONNX export carries: the one that conditions
    the served model) or `from_pretrained` (a Hugging Face encoder directory, or "minilm").
    """

    def __init__(self, tokenizer: Any, hidden_states: Any, name: str) -> None:
        """`hidden_states(input_ids, attention_mask)` (int64 numpy arrays) -> numpy [n, tokens, hidden]."""
        self.tokenizer, self._hidden_states, self.name = tokenizer, hidden_states, name

    @classmethod
    def from_pretrained(cls, name: str = "minilm") -> TextEncoder:
        """A Hugging Face text-encoder directory, or "minilm" for the bundled all-MiniLM-L6-v2."""
        from transformers import AutoModel, AutoTokenizer

        from model.build import text_encoder_path

        path = text_encoder_path(name)
        return cls(AutoTokenizer.from_pretrained(path), _torch_states(AutoModel.from_pretrained(path)), name)

    @classmethod
    def from_model_dir(cls, directory: str | Path) -> TextEncoder:
        """The text encoder of a saved MusicGen (reads only its `text_encoder.*` weights) or of an ONNX export
        (text_encoder.onnx); any other model layout is loaded whole and its encoder kept."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ModelInputError(f"{directory} is not a model directory: it has no config.json")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if (directory / "text_encoder.onnx").is_file():
            return cls(tokenizer, _onnx_states(directory / "text_encoder.onnx"), str(directory))
        encoder = _encoder_from_safetensors(directory)
        if encoder is None:  # e.g. pytorch_model.bin: transformers knows how to read it
            from model.checkpoint import load_model

            encoder = load_model(directory)[0].text_encoder
        return cls(tokenizer, _torch_states(encoder), str(directory))

    def embed(self, prompts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings [len(prompts), hidden] float32."""
        out = []
        for start in range(0, len(prompts), batch_size):
            tokens = self.tokenizer(
                prompts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="np",
                return_token_type_ids=False,
            )
            ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
            states = np.asarray(self._hidden_states(ids, mask), dtype=np.float32)
            weights = mask[..., None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _torch_states(encoder: Any) -> Any:
    import torch

    encoder = encoder.eval()

    def hidden_states(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            states = encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        return states.float().numpy()

    return hidden_states


def _onnx_states(path: Path) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def hidden_states(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]

    return hidden_states


def _encoder_from_safetensors(directory: Path) -> Any | None:
    """The `text_encoder.*` tensors of a (possibly sharded) model.safetensors in a text-encoder module, or None."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForTextEncoding

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({file for key, file in weight_map.items() if key.startswith("text_encoder.")})
    else:
        files = ["model.safetensors"] if (directory / "model.safetensors").is_file() else []
    if not files:
        return None
    state = {}
    for file in files:
        with safe_open(directory / file, "pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith("text_encoder."):
                    state[key.removeprefix("text_encoder.")] = tensors.get_tensor(key)
    config = AutoConfig.for_model(**json.loads((directory / "config.json").read_text())["text_encoder"])
    config._attn_implementation = "sdpa"  # as model.build.configure: padding masks must be honoured
    encoder = AutoModelForTextEncoding.from_config(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelInputError(
            f"the text encoder weights in {directory} do not fit its config: "
            f"{len(missing)} missing, {len(unexpected)} unexpected (e.g. {(missing + unexpected)[0]})"
        )
    return encoder


def embed_prompts(prompts: list[str], text_encoder: TextEncoder) -> np.ndarray:
    """Sentence embeddings [len(prompts), hidden] of `prompts` (see TextEncoder)."""
    return text_encoder.embed(list(prompts))


class PromptProjection:
    """Prompt embeddings projected on the reference prompts' first principal components.

    Fewer reference prompts than components (or a lower rank) leave the missing components zero, so `project`
    always returns [n, PROMPT_EMBEDDING_COMPONENTS]. Each component's sign is fixed (its largest loading is
    positive), so refitting on the same prompts gives the same coordinates.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.components = np.asarray(components, dtype=np.float64)  # [PROMPT_EMBEDDING_COMPONENTS, hidden]
        if self.components.shape != (PROMPT_EMBEDDING_COMPONENTS, self.mean.size):
            raise ModelInputError(
                f"a prompt projection needs {PROMPT_EMBEDDING_COMPONENTS} components of width {self.mean.size}, "
                f"got shape {self.components.shape}"
            )

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> PromptProjection:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or len(embeddings) < 1:
            raise ModelInputError(f"fit a prompt projection on embeddings [n >= 1, hidden], got {embeddings.shape}")
        mean = embeddings.mean(axis=0)
        _, singular, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
        components = np.zeros((PROMPT_EMBEDDING_COMPONENTS, mean.size))
        rank = int(np.sum(singular > 1e-9 * max(singular.max(initial=0.0), 1e-300)))
        keep = min(rank, PROMPT_EMBEDDING_COMPONENTS)
        signs = np.sign(vt[np.arange(keep), np.abs(vt[:keep]).argmax(axis=1)])
        components[:keep] = vt[:keep] * signs[:, None]
        return cls(mean, components)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Coordinates [n, PROMPT_EMBEDDING_COMPONENTS] of embeddings [n, hidden]."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if embeddings.shape[1] != self.mean.size:
            raise ModelInputError(
                f"embeddings are {embeddings.shape[1]}-d but the projection was fitted on {self.mean.size}-d ones: "
                "use the text encoder the reference was built with"
            )
        return (embeddings - self.mean) @ self.components.T

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, mean=self.mean, components=self.components)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PromptProjection:
        with np.load(path) as data:
            return cls(data["mean"], data["components"])


def prompt_columns(
    prompts: list[str], projection: PromptProjection | None, text_encoder: TextEncoder | None
) -> list[dict[str, Any]]:
    """Every prompt column for each prompt; the embedding columns are None without a projection and encoder."""
    rows = [prompt_statistics(prompt) for prompt in prompts]
    coordinates = None
    if projection is not None and text_encoder is not None and prompts:
        coordinates = projection.project(embed_prompts(prompts, text_encoder))
    for i, row in enumerate(rows):
        for c in range(PROMPT_EMBEDDING_COMPONENTS):
            row[f"prompt_embedding_{c}"] = None if coordinates is None else float(coordinates[i, c])
    return rows


# -- audio ---------------------------------------------------------------------------------------------------------

_default_embedder: Embedder | None = None


def _mel_embedder() -> Embedder:
    global _default_embedder
    if _default_embedder is None:  # built on first use: its constructor imports librosa
        from model.embedders import MelEmbedder

        _default_embedder = MelEmbedder()
    return _default_embedder


def empty_audio_row() -> dict[str, Any]:
    """The audio columns of a request with no audio (cancelled before its first chunk): all null."""
    from model.audio_quality import FEATURES

    return {**dict.fromkeys(FEATURES, None), "audio_key": None, "mel_frames": None}


def audio_row(
    audio: np.ndarray, sample_rate: int, embedder: Embedder | None = None, window_s: float = AUDIO_WINDOW_S
) -> dict[str, Any]:
    """The audio columns of one mono clip: audio_features of its opening `window_s` seconds (all null for a
    shorter clip) with duration_s its whole length, the estimated key (None for a silent clip, which has none),
    and mel_frames: up to MEL_FRAMES evenly spaced frames of `embedder` (MelEmbedder by default) over the whole
    clip as float16 bytes, None when the clip is shorter than one frame."""
    from model.audio_quality import FEATURES, SILENCE_DBFS, audio_features

    audio = np.asarray(audio, dtype=np.float32)
    opening = round(window_s * sample_rate)
    row: dict[str, Any] = dict(audio_features(audio[:opening], sample_rate))  # also refuses empty or broken audio
    if audio.size < opening:  # too short to compare with the reference's openings
        row = dict.fromkeys(FEATURES, None)
    row["duration_s"] = audio.size / sample_rate
    if not np.any(np.abs(audio) >= 10.0 ** (SILENCE_DBFS / 20.0)):
        row["audio_key"] = None
    else:
        with warnings.catch_warnings():
            # The key's CQT warns on every clip shorter than its lowest octave's window (a short or cancelled
            # request): expected here, and one warning per request would flood a server's log.
            warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
            row["audio_key"] = key_name(*estimate_key(audio, sample_rate))
    try:
        frames = (embedder or _mel_embedder()).embed(audio, sample_rate)
    except ModelInputError:  # shorter than one embedder frame
        frames = None
    if frames is not None and len(frames):
        if len(frames) > MEL_FRAMES:
            frames = frames[np.linspace(0, len(frames) - 1, MEL_FRAMES).round().astype(int)]
        row["mel_frames"] = np.ascontiguousarray(frames, dtype=np.float16).tobytes()
    else:
        row["mel_frames"] = None
    return row


def frames_from_bytes(blob: bytes | None, dim: int = 64) -> np.ndarray:
    """The frames [n, dim] float32 a row's mel_frames holds (MelEmbedder's dim is 64); [0, dim] for None."""
    if blob is None or (isinstance(blob, float) and math.isnan(blob)):  # pandas may show a null as NaN
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(blob, dtype=np.float16).reshape(-1, dim).astype(np.float32)
