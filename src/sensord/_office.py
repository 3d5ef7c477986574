"""The daemon's side of the HTTP API: work-order actions, lists, silences and the audit
log, each change made under the batch lock and committed in one outbox transaction with
its audit entry and the messages that tell people, before the caller gets its answer."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sensord._daemon import Daemon, RuleReload
from sensord._errors import ConfigError, Conflict, NotFound, WorkOrderError
from sensord.dispatch import DEFAULT_MAX_SILENCE, max_silence
from sensord.outbox import AuditEntry, Filter, SilenceRow
from sensord.workorders import Desk, WorkOrder


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a client's name and role (from its token), and its address."""

    name: str
    role: str
    remote: str


class Office:
    """What the API and the console do to the running daemon."""

    def __init__(self, daemon: Daemon, *, clock: Callable[[], float] = time.time) -> None:
        self._daemon = daemon
        self._clock = clock

    @property
    def desk(self) -> Desk:
        dispatcher = self._daemon.pipeline.dispatcher
        if dispatcher is None or dispatcher.desk is None:
            raise NotFound("work orders need dispatch: set `dispatch:` in sensord.yaml")
        return dispatcher.desk

    @property
    def last_reload(self) -> RuleReload | None:
        """The daemon's last rule reload since it started (the console shows it)."""
        return self._daemon.last_reload

    def event_time(self) -> float:
        """Now on the stream's clock: an action is dated as an MQTT ack read now would be."""
        return self._daemon.pipeline.ack_time(self._clock())

    async def act(  # noqa: PLR0913 - an action's parts, all keywords
        self,
        wo_id: str,
        action: str,
        caller: Caller,
        *,
        by: str | None = None,
        note: str = "",
        to: str = "",
        rating: int | None = None,
        source: str = "api",
        link_id: str | None = None,
    ) -> WorkOrder:
        """Do one action on one work order; durable (with its audit entry) on return.
        `by` is the person (a grid worker using the desk's token); default the caller.
        `link_id`: a one-tap link's id, used up in the same transaction."""
        daemon = self._daemon
        desk = self.desk
        dispatcher = daemon.pipeline.dispatcher
        assert dispatcher is not None
        async with daemon.batch_lock:
            if link_id is not None and daemon.outbox.work_orders.link_used(link_id):
                raise Conflict("this link was used already; open the console to see the work order")
            wo = desk.act(
                wo_id, action, by=(by or caller.name).strip() or caller.name, at=self.event_time(),
                source=source, note=note, to=to, rating=rating,
            )  # fmt: skip
            notices = dispatcher.work_order_notices(None)
            detail: dict[str, Any] = {"state": wo.state.value, "note": note, "to": to, "rating": rating,
                                      "by": by, "source": source}  # fmt: skip
            audit = AuditEntry(self._clock(), caller.name, caller.role, action, wo_id, detail, caller.remote)
            store = daemon.outbox.work_orders
            # On the outbox's writer thread, as a batch's commit: the loop goes on reading
            # the broker while this fsyncs (the batch lock keeps batches out meanwhile).
            await daemon.outbox.run_in_writer(functools.partial(
                daemon.outbox.commit,
                [], notices=notices, work_orders=dispatcher.work_order_rows(), audit=[audit],
                before=(lambda: store.use_link(link_id, self._clock())) if link_id is not None else None,
            ))  # fmt: skip
        daemon.wake_all()
        return wo

    def get(self, wo_id: str) -> WorkOrder:
        return self.desk.get(wo_id)

    def find(self, f: Filter) -> tuple[list[WorkOrder], int]:
        _ = self.desk  # 404 without dispatch
        bodies, total = self._daemon.outbox.work_orders.query(f)
        return [WorkOrder.decode(b) for b in bodies], total

    def places(self, states: Sequence[str]) -> list[tuple[str, str, int]]:
        """(community, grid, how many) of the work orders in these states."""
        _ = self.desk  # 404 without dispatch
        return self._daemon.outbox.work_orders.places(states)

    def audit(self, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
        return self._daemon.outbox.work_orders.audit(since, limit)

    # -- silences ------------------------------------------------------------------

    def max_silence(self) -> float:
        """The longest silence the dispatch file allows, read now (as `sensord silence add`
        does); the default when the file cannot be read at the moment."""
        try:
            return max_silence(self._daemon.settings)
        except ConfigError:
            return DEFAULT_MAX_SILENCE

    def silences(self) -> list[SilenceRow]:
        return self._daemon.outbox.silences.all()

    async def add_silence(  # noqa: PLR0913 - a silence's parts
        self,
        caller: Caller,
        *,
        matchers: Sequence[str],
        starts_at: float,
        ends_at: float,
        comment: str,
        life_safety: bool = False,
        reason: str = "",
    ) -> int:
        """Store a silence (checked by the caller) and its audit entry."""
        outbox = self._daemon.outbox

        def write() -> int:
            sid = outbox.silences.add(
                matchers, starts_at=starts_at, ends_at=ends_at, created_by=caller.name, comment=comment,
                life_safety=life_safety, reason=reason,
            )  # fmt: skip
            detail = {"matchers": [*matchers], "starts_at": starts_at, "ends_at": ends_at, "comment": comment,
                      "life_safety": life_safety, "reason": reason}  # fmt: skip
            self._audit(caller, "silence_add", f"silence/{sid}", detail)
            return sid

        async with self._daemon.batch_lock:
            return await outbox.run_in_writer(write)

    async def expire_silence(self, caller: Caller, silence_id: int) -> None:
        outbox = self._daemon.outbox
        at = self.event_time()

        def write() -> bool:
            if not outbox.silences.expire(silence_id, at=at):
                return False
            self._audit(caller, "silence_expire", f"silence/{silence_id}", {})
            return True

        async with self._daemon.batch_lock:
            if not await outbox.run_in_writer(write):
                raise NotFound(f"no active silence {silence_id}")

    def _audit(self, caller: Caller, action: str, target: str, detail: dict[str, Any]) -> None:
        """On the writer thread (with the change it records)."""
        entry = AuditEntry(self._clock(), caller.name, caller.role, action, target, detail, caller.remote)
        self._daemon.outbox.commit([], audit=[entry])


__all__ = ["Caller", "Conflict", "NotFound", "Office", "WorkOrderError"]
