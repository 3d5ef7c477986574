"""systemd notify protocol (READY=1, WATCHDOG=1, STOPPING=1) without a dependency.

The protocol is one datagram per message to $NOTIFY_SOCKET; a leading '@' means the
abstract namespace. Outside systemd there is no socket and every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify messages; built from the environment systemd gives the service."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and mine else None

    def notify(self, state: str) -> bool:
        """Send one state line; False when not running under systemd."""
        if not self._addr:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never block the event loop: a listener that stops reading (its queue holds
            # a handful of datagrams) costs a lost WATCHDOG=1, not a frozen daemon.
            sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
            try:
                sock.sendto(state.encode(), self._addr)
            except OSError:  # BlockingIOError included
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")
