"""Silences at dispatch: an alert that fires inside an active silence whose matchers it
meets is held, not sent. When no silence holds it any more and it still fires, it is sent
then (as Alertmanager notifies alerts still active after a silence ends, but nothing is
lost on the way); one that ended while silenced was never told and stays untold.

A silence applies to life-safety alerts only if it was made with the explicit flag and
a reason; each life-safety alert it holds is logged at WARNING and counted. Times are
compared with the alert's event time, so a replay is held exactly as the live run was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sensord._settings import Settings
from sensord._types import AlertEvent
from sensord.dispatch._spec import Matcher, parse_matcher, read_dispatch
from sensord.outbox import SilenceRow, decode_event, encode_event
from sensord.rules._spec import parse_duration

log = logging.getLogger("sensord.dispatch")

# Without a dispatch file: the dispatch file's own default.
DEFAULT_MAX_SILENCE = 72 * 3600.0


@dataclass(frozen=True, slots=True)
class SilenceTerms:
    """A silence as checked for `sensord silence add` and the API, ready to store."""

    matchers: tuple[str, ...]
    starts_at: float
    ends_at: float
    comment: str
    life_safety: bool
    reason: str


def silence_terms(  # noqa: PLR0913 - a silence's parts, all but two as keywords
    matchers: Sequence[str],
    duration: object,
    *,
    start: float,
    max_s: float,
    comment: str,
    life_safety: bool = False,
    reason: str = "",
) -> SilenceTerms:
    """Check a silence the way every maker of one must: matchers that parse, a duration
    within max_silence (a forgotten silence must end), a comment, and a reason when it
    holds life-safety alerts. Raises ValueError saying what to change."""
    texts = tuple(parse_matcher(m).text for m in matchers)
    if not texts:
        raise ValueError('a silence needs at least one matcher (label="value")')
    seconds = parse_duration(duration)
    if not 0 < seconds <= max_s:
        raise ValueError(f"the duration must be more than 0 and at most max_silence ({max_s / 3600:g} h)")
    if not comment.strip():
        raise ValueError("a silence needs a comment: why the alerts may be held")
    if life_safety and not reason.strip():
        raise ValueError(
            "a silence that holds life-safety alerts needs a reason: holding back fire or SOS alerts "
            "must be explained"
        )
    return SilenceTerms(texts, start, start + seconds, comment.strip(), life_safety, reason.strip())


def max_silence(settings: Settings) -> float:
    """The longest silence the configured dispatch file allows. Raises ConfigError when
    the file cannot be read."""
    if settings.dispatch is None:
        return DEFAULT_MAX_SILENCE
    return read_dispatch(settings.input_path(settings.dispatch)).spec.max_silence


@dataclass(frozen=True)
class Silence:
    row: SilenceRow
    matchers: tuple[Matcher, ...]

    def holds(self, event: AlertEvent, labels: Mapping[str, str], at: float) -> bool:
        if event.life_safety and not self.row.life_safety:
            return False
        return self.row.active(at) and all(m.matches(labels) for m in self.matchers)


class Silencer:
    """The silences in force and the alerts they hold."""

    def __init__(self) -> None:
        self.silences: list[Silence] = []
        self.held: dict[str, AlertEvent] = {}
        self._dirty: set[str] = set()
        self._told: set[int] = set()  # life-safety silences already logged

    def refresh(self, rows: Sequence[SilenceRow]) -> None:
        """Take the stored silences (a row whose matchers no longer parse is skipped: the
        CLI validates them, so that is a hand-edited database)."""
        out = []
        for row in rows:
            try:
                out.append(Silence(row, tuple(parse_matcher(m) for m in row.matchers)))
            except ValueError:
                continue
            if row.life_safety and row.id not in self._told:
                self._told.add(row.id)
                log.warning(
                    "a silence covers life-safety alerts",
                    extra={"fields": {"silence": row.id, "matchers": list(row.matchers), "by": row.created_by,
                                      "reason": row.reason, "ends_at": row.ends_at}},
                )  # fmt: skip
        self.silences = out

    def holding(self, event: AlertEvent, labels: Mapping[str, str], at: float) -> Silence | None:
        return next((s for s in self.silences if s.holds(event, labels, at)), None)

    def hold(self, event: AlertEvent) -> None:
        self.held[event.fingerprint] = event
        self._dirty.add(event.fingerprint)

    def drop(self, event: AlertEvent) -> bool:
        """A held alert ended: it was never told. True if it was held."""
        if self.held.pop(event.fingerprint, None) is None:
            return False
        self._dirty.add(event.fingerprint)
        return True

    def released(self, clock: float, labels_of: Mapping[str, Mapping[str, str]]) -> list[AlertEvent]:
        """Held alerts no silence holds at `clock` any more (they still fire)."""
        free = [e for fp, e in self.held.items() if self.holding(e, labels_of[fp], clock) is None]
        for e in free:
            del self.held[e.fingerprint]
            self._dirty.add(e.fingerprint)
        return free

    def changes(self) -> dict[str, bytes | None]:
        held = self.held
        rows = {f"silence\x1f{fp}": (encode_event(held[fp]) if fp in held else None) for fp in self._dirty}
        self._dirty.clear()
        return rows

    def load(self, fingerprint: str, body: bytes) -> None:
        self.held[fingerprint] = decode_event(body)
