"""The request log's columns: one row per served generation, written by the front's logger and read by the
drift report, the dashboard and the drift check. The evaluation's reference set has the same columns, so a
window of traffic and the reference compare column for column.

Parquet part files under one folder (`artifacts/monitoring/requests` by default), each written whole and
renamed into place, so a crash loses at most the batch that was not flushed yet.
"""

from __future__ import annotations

from model.audio_quality import FEATURES

# What was asked and how it went (not compared for drift: they describe the service, not the data).
REQUEST_COLUMNS = {
    "time": "timestamp[us, tz=UTC]",
    "route": "string",
    "prompt": "string",
    "duration": "double",
    "guidance_scale": "double",
    "temperature": "double",
    "top_k": "int64",
    "top_p": "double",
    "seed": "int64",  # null when unknown
    "cancelled": "bool",
    "latency_s": "double",  # request to last chunk
    "first_chunk_s": "double",
    "real_time_factor": "double",
}

# Prompt features: language-agnostic text statistics, a tempo or key the prompt names (for adherence), and
# the text encoder's embedding projected on the reference prompts' first principal components.
PROMPT_EMBEDDING_COMPONENTS = 4
PROMPT_COLUMNS = {
    "prompt_chars": "int64",
    "prompt_words": "int64",
    "prompt_digit_share": "double",
    "prompt_non_ascii_share": "double",
    "prompt_upper_share": "double",
    "prompt_tempo_bpm": "double",  # null unless the prompt names one ("92 BPM")
    "prompt_key": "string",  # null unless the prompt names one ("in D minor")
    **{f"prompt_embedding_{i}": "double" for i in range(PROMPT_EMBEDDING_COMPONENTS)},
}

# Output-audio features: model/audio_quality.py's (loudness, spectra, tempo, silence, clipping, duration...),
# the estimated key, and a sample of mel-embedding frames (float16 bytes, MEL_FRAMES x d) for a window's FAD.
MEL_FRAMES = 32
# The scalar audio features describe each clip's opening AUDIO_WINDOW_S seconds, so a request's length (a setting
# users choose) does not read as drift: generation is autoregressive, so the opening of a 10 s clip is made exactly
# as a 2 s clip is, and both compare like with like with the reference's openings. A clip shorter than the window
# has no such features (null: not compared); duration_s alone is its whole length, and is not a drift feature.
AUDIO_WINDOW_S = 2.0
AUDIO_COLUMNS = {
    **{name: "double" for name in FEATURES},
    "audio_key": "string",
    "mel_frames": "binary",
}

COLUMNS = {**REQUEST_COLUMNS, **PROMPT_COLUMNS, **AUDIO_COLUMNS}

# The numeric features the drift report compares (text and bytes columns are not distributions to test).
DRIFT_FEATURES = [
    name
    for name, kind in {**PROMPT_COLUMNS, **AUDIO_COLUMNS}.items()
    if kind in ("double", "int64")
    # prompt_tempo_bpm is mostly null (only some prompts name a tempo); duration_s is what the request asked for
    and name not in ("prompt_tempo_bpm", "duration_s")
]
