"""Dispatch state cut by community, for a handover between instances (README: Changing
the number of instances): the waiting groups, inhibitions and silence holds of the
communities an instance hands over go with them."""

from __future__ import annotations

import orjson

from sensord._types import AlertEvent
from sensord.dispatch._group import Group
from sensord.outbox import decode_event


def state_by_community(key: str, body: bytes) -> dict[str, bytes] | None:
    """One dispatch state row as {community: that community's part of it}, or None for a
    row tied to no community (it stays with its instance). A group mixing communities
    (a route whose `group_by` leaves out `community`) is split into one per community,
    each with the group's timers."""
    if key.startswith("group\x1f"):
        group = Group.decode(body)
        parts: dict[str, dict[str, AlertEvent]] = {}
        for fp, event in group.alerts.items():
            parts.setdefault(event.community, {})[fp] = event
        if not parts:
            return None
        return {c: Group(**{**group.__dict__, "alerts": alerts}).encode() for c, alerts in parts.items()}
    if key.startswith("inhibit\x1fsrc\x1f"):
        community = orjson.loads(body).get("community")
        return {community: body} if isinstance(community, str) and community else None
    if key.startswith(("inhibit\x1fheld\x1f", "silence\x1f")):
        return {decode_event(body).community: body}
    return None


def merge_state(key: str, mine: bytes, theirs: bytes) -> bytes:
    """Two instances' parts of one row: a group's alerts are joined (its timers are this
    instance's); any other row is one alert's, and the incoming part wins."""
    if not key.startswith("group\x1f"):
        return theirs
    group, other = Group.decode(mine), Group.decode(theirs)
    group.alerts.update(other.alerts)
    group.changed = group.changed or other.changed
    return group.encode()
