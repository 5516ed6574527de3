"""How audio travels on the wire, for every server here (the front and the KServe predictor): one implementation.

- PCM16: float audio in [-1, 1] as 16-bit little-endian samples, rounded to the nearest step (truncating would
  bias every sample towards zero by half a step), so a stream, a WAV file and either server carry the same samples.
- WAV: a 16-bit mono RIFF file of those samples, written with the standard library's `wave`.
- base64: ASCII text of bytes, for JSON bodies and Server-Sent Events.
- Server-Sent Events: one message, with an optional `event:` name.
"""

from __future__ import annotations

import base64
import io
import wave

import numpy as np

PCM16_SCALE = 32767  # full scale maps to +-32767: symmetric, so -1.0 and 1.0 are mirror images


def pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] (values beyond are clipped) as 16-bit little-endian PCM, rounded."""
    return np.round(np.clip(audio, -1.0, 1.0) * PCM16_SCALE).astype("<i2").tobytes()


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit mono WAV file: the same samples a PCM16 stream of the clip carries."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16(audio))
    return buffer.getvalue()


def base64_text(data: bytes) -> str:
    """`data` as base64 ASCII text."""
    return base64.b64encode(data).decode("ascii")


def pcm16_base64(audio: np.ndarray) -> str:
    """Float audio as base64 PCM16 (raw, no header: a stream's header message says the sample rate)."""
    return base64_text(pcm16(audio))


def wav_base64(audio: np.ndarray, sample_rate: int) -> str:
    """Mono float audio as a base64 16-bit WAV file."""
    return base64_text(wav_bytes(audio, sample_rate))


def sse(data: str, event: str | None = None) -> str:
    """One Server-Sent Events message: `event: NAME` when named, then `data:` (a line each: SSE ends a field at a
    line break), then the blank line that ends the message."""
    named = f"event: {event}\n" if event is not None else ""
    return named + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"
