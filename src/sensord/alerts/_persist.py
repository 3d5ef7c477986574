"""The engine's state on disk: the checkpoint rows of open alerts (the authority after a
crash, both ways) and the whole-state snapshot (timers, windows, latest values)."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from sensord._types import AlertStatus, Family
from sensord.alerts._base import EngineBase
from sensord.alerts._model import (
    ActiveAlert,
    _latched,
    _put,
    _RuleState,
)
from sensord.rules import CompiledRule


class Persistence(EngineBase):
    """Saves and restores the engine's state: checkpoint rows and snapshots."""

    def active(self) -> list[ActiveAlert]:
        """Every pending or firing alert."""
        out: list[ActiveAlert] = []
        for family, fr in self._rules.by_family.items():
            devices = self._registry.devices(family)
            for rule, st in zip(fr.rules, self._state[family], strict=True):
                shown = map(int, np.flatnonzero(st.active | st.firing if _latched(rule) else st.firing))
                out.extend(self._checkpoint_row(rule, devices[dv], st, dv) for dv in shown)
        return out

    def restore(self, active: Iterable[ActiveAlert]) -> int:
        """Make the checkpointed alerts the open ones, both ways: an alert the (older)
        snapshot has open and the checkpoint lacks is switched off; a checkpointed one is
        switched on with its start, level and acknowledgement. Unknown rules or devices
        are skipped. Returns how many rows were applied."""
        index = {(f, r.name): i for f, fr in self._rules.by_family.items() for i, r in enumerate(fr.rules)}
        rows: dict[tuple[Family, int, int], ActiveAlert] = {}
        communities: dict[str, ActiveAlert] = {}
        for al in active:
            if al.family is None:
                communities[al.community] = al
                continue
            i = index.get((al.family, al.rule))
            device = self._registry.get(al.device_id)
            if i is not None and device is not None and device.family is al.family:
                rows[(al.family, i, device.index)] = al
        for family, fr in self._rules.by_family.items():
            for i, (rule, st) in enumerate(zip(fr.rules, self._state[family], strict=True)):
                open_now = st.active | st.firing if _latched(rule) else st.firing
                for dv in map(int, np.flatnonzero(open_now)):
                    if (family, i, dv) in rows:
                        continue
                    if rule.no_data and dv in st.since:  # heard again after it fired (as above)
                        self._last_ts[family][dv] = max(float(self._last_ts[family][dv]), st.since[dv])
                    self._switch_off(rule, st, self._latches[family][i], dv)
        for (family, i, dv), al in rows.items():
            rule = self._rules.by_family[family].rules[i]
            self._switch_on(rule, self._state[family][i], self._latches[family][i], dv, al)
        self._restore_communities(communities)
        return len(rows) + sum(1 for c in communities if c in self._communities)

    @staticmethod
    def _switch_off(rule: CompiledRule, st: _RuleState, latches: list[_RuleState], dv: int) -> None:
        """An alert the checkpoint says is closed: nothing of it stays open."""
        if _latched(rule):
            st.set_active(np.array([dv]), np.array([False]))
        st.firing[dv] = False
        for m in _RuleState.MAPS:
            if m != "resolved_at":
                getattr(st, m).pop(dv, None)
        st.acked.discard(dv)
        st.start_values.pop(dv, None)
        st.level.pop(dv, None)
        st.told.pop(dv, None)
        for latch in latches:
            latch.set_active(np.array([dv]), np.array([False]))

    @staticmethod
    def _switch_on(
        rule: CompiledRule, st: _RuleState, latches: list[_RuleState], dv: int, al: ActiveAlert
    ) -> None:
        firing = al.status is AlertStatus.FIRING
        if _latched(rule):
            st.set_active(np.array([dv]), np.array([True]))
        if not firing:
            st.keep_until.pop(dv, None)  # a pending run has nothing kept
        st.since[dv] = al.since
        st.firing[dv] = firing
        _put(st.last_notified, dv, al.last_notified if al.last_notified is not None else math.nan)
        if al.acked:
            st.acked.add(dv)
        else:
            st.acked.discard(dv)
        if rule.levels and firing:
            level = next(
                (k for k, lv in enumerate(rule.levels) if lv.severity.value == al.severity),
                len(rule.levels) - 1,
            )
            st.level[dv] = level
            for k, latch in enumerate(latches):
                latch.set_active(np.array([dv]), np.array([k == level]))

    def _restore_communities(self, rows: dict[str, ActiveAlert]) -> None:
        for ci, name in enumerate(self._communities):
            al = rows.get(name)
            if al is None:
                if self._comm_firing[ci]:
                    # Closed after the snapshot, so heard again at some point after it
                    # fired: without that, the stale last-heard time would make the next
                    # reading look like a new silence.
                    heard = float(self._comm_since[ci])
                    self._comm_last[ci] = max(float(self._comm_last[ci]), heard)
                    self._comm_back[ci] = max(float(self._comm_back[ci]), heard)
                self._comm_firing[ci], self._comm_since[ci] = False, np.nan
            else:
                self._comm_firing[ci], self._comm_since[ci] = True, al.since

    def snapshot(self) -> bytes:
        """The whole state (timers, cooldowns, windows, latest values, communities) as bytes."""
        return self.snapshot_state().encode()

    def snapshot_state(self) -> SnapshotState:
        """The whole state as it is now, copied: cheap enough for the event loop. Its
        `encode()` (the costly part) may then run on another thread while the engine moves on."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "comm_last": self._comm_last,
            "comm_firing": self._comm_firing,
            "comm_since": self._comm_since,
            "comm_back": self._comm_back,
        }
        manifest: dict[str, Any] = {"origin": self.origin, "registry": self._registry_digest(), "rules": {}}
        for family in Family:
            arrays[f"last_ts/{family.value}"] = self._last_ts[family]
            for name, arr in self._last_vals[family].items():
                arrays[f"last_vals/{family.value}/{name}"] = arr
        for family, hist in self._windows.items():
            for key, warr in hist.arrays().items():
                arrays[f"win/{family.value}/{key}"] = warr
        for family, fr in self._rules.by_family.items():
            for rule, st in zip(fr.rules, self._state[family], strict=True):
                key = f"{family.value}/{rule.name}"
                # Shallow copies (C speed) on the loop; the keys become strings when the
                # manifest is encoded, off the loop (orjson's OPT_NON_STR_KEYS).
                saved: dict[str, object] = {
                    "definition": rule.definition,
                    "start_values": dict(st.start_values),
                    "acked": list(st.acked),
                    "level": dict(st.level),
                    "flap_hist": dict(st.flap_hist),
                    "flapping": list(st.flapping),
                    "told": dict(st.told),
                    **{m: dict(getattr(st, m)) for m in _RuleState.MAPS},
                }
                manifest["rules"][key] = saved
                for a in _RuleState.FLAGS:
                    arrays[f"rule/{key}/{a}"] = getattr(st, a)
                for k, latch in enumerate(self._latches[family][fr.rules.index(rule)]):
                    arrays[f"rule/{key}/level{k}"] = latch.active
        # Copies: the engine changes its arrays in place with the next batch.
        copied = {name: arr.copy() for name, arr in arrays.items()}
        return SnapshotState(copied, manifest)

    def load_snapshot(self, blob: bytes) -> int:
        """Restore a snapshot taken with the same registry; rules whose definition changed
        start fresh. Returns how many rules' state was restored (0 if none applies)."""
        with np.load(io.BytesIO(blob)) as z:
            manifest = orjson.loads(z["manifest"].tobytes())
            if manifest.get("registry") != self._registry_digest():
                return 0
            # An engine that never saw a reading has no origin (NaN, which JSON keeps as null).
            origin = manifest["origin"]
            self.origin = math.nan if origin is None else float(origin)
            self._comm_last, self._comm_firing, self._comm_since = (
                z["comm_last"],
                z["comm_firing"],
                z["comm_since"],
            )
            self._comm_back = z["comm_back"]
            for family in Family:
                self._last_ts[family] = z[f"last_ts/{family.value}"]
                prefix = f"last_vals/{family.value}/"
                self._last_vals[family] = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
            for family, hist in self._windows.items():
                prefix = f"win/{family.value}/"
                hist.load({k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)})
            restored = 0
            for family, fr in self._rules.by_family.items():
                for rule, st in zip(fr.rules, self._state[family], strict=True):
                    key = f"{family.value}/{rule.name}"
                    saved = manifest["rules"].get(key)
                    if saved is None or saved["definition"] != rule.definition:
                        continue
                    for a in _RuleState.FLAGS:
                        setattr(st, a, z[f"rule/{key}/{a}"].copy())
                    st.n_active = int(st.active.sum())
                    for k, latch in enumerate(self._latches[family][fr.rules.index(rule)]):
                        latch.set_active(np.arange(latch.active.shape[0]), z[f"rule/{key}/level{k}"])
                    for m in _RuleState.MAPS:
                        setattr(st, m, {int(k): float(v) for k, v in saved[m].items()})
                    st.acked = set(saved["acked"])
                    st.level = {int(k): int(v) for k, v in saved["level"].items()}
                    st.flap_hist = {int(k): int(v) for k, v in saved["flap_hist"].items()}
                    st.flapping = set(saved["flapping"])
                    st.told = {int(k): float(v) for k, v in saved["told"].items()}
                    st.start_values = {int(k): v for k, v in saved["start_values"].items()}
                    restored += 1
        return restored

    def _registry_digest(self) -> str:
        # Once per registry: hashing every device id took most of a snapshot's time.
        cached = self._digest_of
        if cached is not None and cached[0] is self._registry:
            return cached[1]
        ids = "\x1f".join(f"{d.family.value}:{d.device_id}:{d.index}" for d in self._registry.by_id.values())
        digest = hashlib.sha256(ids.encode()).hexdigest()
        self._digest_of = (self._registry, digest)
        return digest


class SnapshotState:
    """A copy of the engine's whole state, to be encoded (np.savez) off the event loop."""

    __slots__ = ("_arrays", "_manifest")

    def __init__(self, arrays: dict[str, npt.NDArray[Any]], manifest: dict[str, Any]) -> None:
        self._arrays = arrays
        self._manifest = manifest

    def encode(self) -> bytes:
        # Device indexes become string keys, as `load_snapshot` reads them.
        manifest = orjson.dumps(self._manifest, option=orjson.OPT_NON_STR_KEYS)
        buf = io.BytesIO()
        arrays = {"manifest": np.frombuffer(manifest, dtype=np.uint8), **self._arrays}
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
        return buf.getvalue()
