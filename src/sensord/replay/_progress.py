"""A one-line progress display for anything that takes more than a few seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`messages 12,000/50,000  8,310 msg/s  elapsed 1.4 s  left 4.6 s`, redrawn at most
    twice a second on a terminal (or every 10 s as plain lines when piped), and a final
    line on `done()`. `total` may be unknown (None)."""

    def __init__(self, what: str, total: int | None = None, *, out: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.count = 0
        self._out = out or sys.stderr
        self._tty = self._out.isatty()
        self._start = time.monotonic()
        self._last = 0.0

    def add(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= (0.5 if self._tty else 10.0):
            self._last = now
            self._show(now, final=False)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.count / elapsed
        text = f"{self.what} {self.count:,}"
        if self.total:
            left = (self.total - self.count) / rate if rate > 0 else float("inf")
            text += f"/{self.total:,}  {rate:,.0f}/s  elapsed {elapsed:.1f} s  left {left:.1f} s"
        else:
            text += f"  {rate:,.0f}/s  elapsed {elapsed:.1f} s"
        return text

    def _show(self, now: float, *, final: bool) -> None:
        text = self.line(now)
        if self._tty:
            self._out.write("\r" + text + ("\n" if final else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def done(self) -> None:
        self._show(time.monotonic(), final=True)
