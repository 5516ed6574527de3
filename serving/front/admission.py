"""Admission control for the front: a bounded number of generations at once and a bounded queue behind them.

A request beyond both is refused at once (`Overloaded`: the front answers 429 with Retry-After, or closes a
WebSocket with 1013) rather than letting every client's latency grow. Waiting requests get slots in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from serving.sources import GenerationStream


class Overloaded(RuntimeError):
    """Every slot is taken and the queue is full."""


class Admission:
    """`max_active` slots; up to `max_queue` requests wait for one in order, more are refused at once.

    Lives on one event loop at a time but binds to none (waiters are futures made when needed), so an app can be
    started, stopped and started again, as tests do.
    """

    def __init__(self, max_active: int, max_queue: int) -> None:
        if max_active < 1 or max_queue < 0:
            raise ValueError(f"need max_active >= 1 and max_queue >= 0, got {max_active} and {max_queue}")
        self.max_active, self.max_queue = max_active, max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> Lease:
        """A slot, at once or after waiting in line; raises Overloaded when the line is full too."""
        if self.active < self.max_active and not self._waiters:
            self.active += 1
            return Lease(self)
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(f"{self.active} streams are running and {len(self._waiters)} requests are waiting")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a leaving request hands its slot over, so `active` stays the same
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._leave()  # the slot was handed over just as this request gave up: pass it on
            raise
        return Lease(self)

    def _leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


class Lease:
    """One admitted request's slot and stream; `release()` (idempotent) cancels the stream and frees the slot."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.stream: GenerationStream | None = None
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.stream is not None:
            self.stream.cancel()  # harmless once it has finished; frees the model at once when it has not
        self.admission._leave()
