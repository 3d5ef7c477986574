"""The engine snapshot's own file beside the outbox, written on its own thread.

The snapshot (timers, windows, latest values: 1.6 MB at 11,000 devices) used to ride in
a batch's SQLite transaction. Encoding it and writing it through the WAL took 15 to 20 ms,
every `snapshot_every_s`, while the batch lock was held and the alerts of that batch and
the next waited. Here it is written after its batch's commit is durable, by one thread of
its own, while batches go on committing: a snapshot is never ahead of the checkpoint (the
checkpoint wins on start, both ways), only possibly behind it.

The file is replaced atomically (write a temporary file, fsync, rename, fsync the folder),
so a crash leaves the previous snapshot or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sensord._errors import OutboxError

log = logging.getLogger("sensord.outbox")


class SnapshotFile:
    """One snapshot file, replaced whole; saves in the background one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def load(self) -> bytes | None:
        """The last saved snapshot, or None if none was saved here."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutboxError(f"cannot read the engine snapshot {self.path}: {exc}") from None

    def save(self, body: bytes) -> None:
        """Replace the snapshot with `body`, durably, before returning."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself survives a power loss
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutboxError(f"cannot write the engine snapshot {self.path}: {exc}") from None

    def save_later(self, encode: Callable[[], bytes]) -> bool:
        """Encode and save on the snapshot thread, not waiting. False (nothing done) while
        the previous one is still being written: the caller tries again with a newer state
        rather than queueing copies of the engine behind a slow disk."""
        if self._pending is not None and not self._pending.done():
            return False
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-snapshot")
        self._pending = self._thread.submit(self._encode_and_save, encode)
        return True

    def _encode_and_save(self, encode: Callable[[], bytes]) -> None:
        try:
            self.save(encode())
        except Exception:  # the next snapshot tries again; the checkpoint is the authority
            log.exception("saving the engine snapshot failed; the next one will try again")

    def finish(self) -> None:
        """Wait for a save under way (on stop, before the last snapshot is written)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)
