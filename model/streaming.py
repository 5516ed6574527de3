"""Audio out while tokens are still coming: decode the codec on a sliding window of frames.

Each decode sees `left_context` frames already played (so the codec's convolutions and LSTM warm up
on real audio) and holds back the newest `lookahead` frames, whose samples still depend on frames not
generated yet. The held-back tail of one decode is crossfaded into the next, so borders do not click.
Concatenated chunks match a single decode of all frames within the tolerance that
`tests/model/test_streaming.py` states.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class StreamingCodecDecoder:
    """Push frames [B, K, n] as they complete; get back audio chunks [B, samples]."""

    def __init__(
        self,
        decode: Callable[[torch.Tensor], np.ndarray],
        hop_length: int,
        chunk_frames: int = 25,
        first_chunk_frames: int = 1,
        left_context: int = 25,
        lookahead: int = 2,
        crossfade: int = 256,
    ):
        if crossfade > lookahead * hop_length:
            raise ValueError("the crossfade must fit inside the held-back lookahead")
        self.decode = decode
        self.hop = hop_length
        self.chunk_frames, self.first_chunk_frames = chunk_frames, first_chunk_frames
        self.left_context, self.lookahead, self.crossfade = left_context, lookahead, crossfade
        self.frames: torch.Tensor | None = None
        self.emitted_frames = 0  # audio up to this frame has been handed out
        self.tail: np.ndarray | None = None  # the last decode's estimate of the next `crossfade` samples
        ramp = np.linspace(0.0, 1.0, crossfade + 2, dtype=np.float32)[1:-1]
        self.fade_in, self.fade_out = ramp, 1.0 - ramp

    def push(self, frames: torch.Tensor) -> np.ndarray | None:
        """Add new frames; return a chunk when enough have accumulated, else None."""
        end_frame = self.add(frames)
        return None if end_frame is None else self._emit(end_frame)

    def add(self, frames: torch.Tensor) -> int | None:
        """`push` without the decoding: the frame a chunk is due up to, else None. A caller batching several
        streams decodes `window(end_frame)` of each (stacked when equally long) and hands the audio to `finish`."""
        self.frames = frames if self.frames is None else torch.cat([self.frames, frames], dim=2)
        ready = self.frames.shape[2] - self.lookahead
        wanted = self.first_chunk_frames if self.emitted_frames == 0 else self.chunk_frames
        return ready if ready - self.emitted_frames >= wanted else None

    def flush(self) -> np.ndarray | None:
        """The rest of the audio, once no more frames will come."""
        if self.frames is None or self.frames.shape[2] == self.emitted_frames:
            return None
        return self._emit(self.frames.shape[2], final=True)

    def window(self) -> torch.Tensor:
        """The frames the next chunk decodes: the left context already played, then everything new."""
        return self.frames[:, :, max(0, self.emitted_frames - self.left_context) :]

    def finish(self, audio: np.ndarray, end_frame: int, final: bool = False) -> np.ndarray:
        """The chunk up to `end_frame` from `audio`, the decoded `window()`."""
        start = max(0, self.emitted_frames - self.left_context)
        offset = (self.emitted_frames - start) * self.hop
        stop = (end_frame - start) * self.hop
        chunk = audio[:, offset:stop].copy()
        if self.tail is not None:
            n = min(self.crossfade, chunk.shape[1])
            chunk[:, :n] = self.tail[:, :n] * self.fade_out[:n] + chunk[:, :n] * self.fade_in[:n]
        self.tail = None if final else audio[:, stop : stop + self.crossfade]
        self.emitted_frames = end_frame
        return chunk

    def _emit(self, end_frame: int, final: bool = False) -> np.ndarray:
        return self.finish(self.decode(self.window()), end_frame, final)
