"""Hot reload: notice that the served model's folder was replaced, load the new model beside the old one, and hand
it to the server between requests.

    reloader = ModelReloader(folder, load=load_generator, swap=source.swap, interval_s=5.0, current=fingerprint(folder))
    reloader.start()        # inside the server's event loop: polls every interval_s seconds
    await reloader.stop()

`musicops promote` (components/evaluation/gate.py) builds the new promoted folder beside the old one and renames it
into place, so the model directory's path stays while its inode, and every file's, changes. `fingerprint` hashes
exactly that identity (inodes, sizes, modification times; no file contents, so a check costs a few `stat` calls
however large the weights). A folder copied over file by file changes its fingerprint too, and a load that sees the
fingerprint change under it is dropped and retried at the next check, so a half-copied model is never served.

A model that does not load, or that the server refuses (`ReloadRefused`: e.g. another sample rate), is logged with
the reason and not tried again until its folder changes once more; the old model serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from model.errors import first_line

log = logging.getLogger(__name__)
G = TypeVar("G")  # what `load` returns: a generator (serving/sources.py), anything in tests


class ReloadRefused(ValueError):
    """The new model loaded but cannot replace the served one; the message says why."""


def fingerprint(folder: str | Path) -> str | None:
    """A short hash of the identity of `folder` and every file under it; None while it is missing or unreadable
    (e.g. in the instant between the two renames that swap a promoted folder)."""
    folder = Path(folder)
    try:
        top = folder.stat()
        entries = [(".", top.st_dev, top.st_ino, top.st_mtime_ns)]
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = path.stat()
                entries.append((path.relative_to(folder).as_posix(), info.st_ino, info.st_size, info.st_mtime_ns))
        after = folder.stat()
    except OSError:  # removed or replaced while we looked: the next check sees the new folder whole
        return None
    if (after.st_dev, after.st_ino, after.st_mtime_ns) != (top.st_dev, top.st_ino, top.st_mtime_ns):
        # Swapped while we walked it (rglob lists a missing folder as empty): the walk may mix two folders.
        return None
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelVersion:
    """Which model serves: what /v1/info reports, and each stream's `model` (its fingerprint)."""

    path: str
    fingerprint: str | None  # None: a preset or an in-memory model, which nothing replaces
    loaded_at: str  # ISO 8601, UTC
    created: str | None = None  # the model card's (model/checkpoint.py)
    training_commit: str | None = None
    data_version: str | None = None

    @classmethod
    def of(cls, path: str | Path, fingerprint: str | None, card: Any = None) -> ModelVersion:
        """The version of a model just loaded from `path`; `card` is its ModelCard (or None)."""
        return cls(
            path=str(path),
            fingerprint=fingerprint,
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            created=getattr(card, "created", None),
            training_commit=getattr(card, "training_commit", None),
            data_version=getattr(card, "data_version", None),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ModelReloader(Generic[G]):
    """Polls one model folder; on a new fingerprint, loads it off the event loop and calls `swap(model, version)`
    on the loop (so no request sees a half-made swap). `counts` holds how many reloads were "loaded" and
    "refused", for /metrics."""

    def __init__(
        self,
        folder: str | Path,
        load: Callable[[Path], G],
        swap: Callable[[G, ModelVersion], None],
        interval_s: float,
        current: str | None,
    ) -> None:
        """`load` runs in a worker thread and raises for a model it cannot load; `swap` raises ReloadRefused for
        one it will not serve. `current`: the fingerprint of the model serving now."""
        if interval_s <= 0:
            raise ValueError(f"the reload interval must be positive, got {interval_s}")
        self.folder, self.load, self.swap, self.interval_s = Path(folder), load, swap, interval_s
        self.counts = {"loaded": 0, "refused": 0}
        self._settled = current  # the fingerprint last served or refused: not loaded again
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start polling; call inside the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="model-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # a boundary: whatever went wrong, the old model serves on and the next check runs
                log.exception("checking %s for a new model failed", self.folder)

    async def check(self) -> bool:
        """One check: True when a new model now serves."""
        seen = await asyncio.to_thread(fingerprint, self.folder)
        if seen is None or seen == self._settled:
            return False
        log.info("%s changed (fingerprint %s): loading it beside the serving model", self.folder, seen)
        try:
            model = await asyncio.to_thread(self.load, self.folder)
        except Exception as error:  # any failure to load refuses this model; its message names the problem
            if await asyncio.to_thread(fingerprint, self.folder) != seen:
                log.warning("%s changed while its model loaded: loading it again at the next check", self.folder)
                return False  # the failure may come from the swap itself: the new folder gets its own try
            return self._refuse(seen, f"it does not load: {first_line(error)}")
        if await asyncio.to_thread(fingerprint, self.folder) != seen:
            # Replaced again, or still being copied, while it loaded: what loaded may mix two models.
            log.warning("%s changed while its model loaded: loading it again at the next check", self.folder)
            return False
        version = ModelVersion.of(self.folder, seen, getattr(model, "card", None))
        try:
            self.swap(model, version)
        except ReloadRefused as error:
            return self._refuse(seen, str(error))
        self._settled = seen
        self.counts["loaded"] += 1
        log.info("now serving %s (fingerprint %s); requests already running finish on the old model", self.folder, seen)
        return True

    def _refuse(self, seen: str, reason: str) -> bool:
        self._settled = seen  # not retried until the folder changes again
        self.counts["refused"] += 1
        log.error(
            "refused the new model in %s (fingerprint %s): %s; the old model serves on", self.folder, seen, reason
        )
        return False
