"""Who a receiver's messages are for, per alert: its fixed people, plus the workers of the
alert's grid or the device's contacts, from the registry."""

from __future__ import annotations

from sensord._registry import Registry
from sensord.channels import Recipient
from sensord.dispatch._spec import Receiver


def recipients(
    receiver: Receiver, *, device_id: str, community: str, grid: str, registry: Registry
) -> tuple[Recipient, ...]:
    """The people one alert reaches through `receiver`, each once (by name and phone)."""
    out = [Recipient(p.name, p.phone, p.email, dict(p.chat)) for p in receiver.people]
    if receiver.recipients == "grid":
        entry = registry.grid(community, grid)
        if entry is not None:
            out += [Recipient(w.name, w.phone, w.email, dict(w.chat)) for w in entry.workers]
    elif receiver.recipients == "contacts":
        device = registry.get(device_id)
        if device is not None:
            out += [Recipient(name, phone=phone) for name, phone in device.entry.contacts.items()]
    seen: set[tuple[str, str | None]] = set()
    unique = []
    for r in out:
        if (r.name, r.phone) not in seen:
            seen.add((r.name, r.phone))
            unique.append(r)
    return tuple(unique)
