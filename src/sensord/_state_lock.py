"""One process per state_dir: a lock file held while the daemon (or a handover step) uses it.

Two instances writing one outbox would interleave their checkpoints and snapshots, and
each would restore the other's alerts as its own. `flock` on `state_dir/sensord.lock`:
the kernel drops it when the process ends, however it ends, so a crash never leaves a
stale lock behind (the pid written in the file is only for the message).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Self

from sensord._errors import ConfigError

LOCK_NAME = "sensord.lock"


class StateLock:
    """An exclusive lock on one state directory, released by `release` or process exit."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self, who: str = "sensord") -> Self:
        """Take the lock; ConfigError naming the holder when another process has it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file: {exc.strerror}", source=str(self.path)) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(
                f"state_dir {self.path.parent} is in use by {holder}: each sensord instance needs a "
                "state_dir of its own (and a handover step runs only while its instances are stopped)",
                source=str(self.path),
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{who} (pid {os.getpid()})\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def __enter__(self) -> Self:
        return self.acquire() if self._file is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
