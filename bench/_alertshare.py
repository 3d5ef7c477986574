"""Shaping a backlog so that a chosen share of its messages changes an alert state.

The generated neighbourhood is quiet: a backlog of it changes almost no alert. Here
chosen messages of bins, fire sensors and wristbands are rewritten so that each one
flips exactly one of five of sensord's default rules (rules/*.yaml), all of which act on
the message itself (no `for:` duration), so one rewritten message is one transition:

| rule | family | fires | clears |
|---|---|---|---|
| bin_full | bin | fill_pct >= 80 | fill_pct < 70 |
| bin_smouldering | bin | temp_c >= 60 | temp_c < 50 |
| smoke_alarm | fire | smoke_alarm | not smoke_alarm |
| wristband_sos | wristband | sos (an event: stays open 30 min) | - |
| blood_pressure_crisis | wristband | systolic >= 180 or diastolic >= 120 | both 10 below |

A device, once touched, has its rule's fields written on every later message too (the
alarm values while it is firing, calm ones otherwise), so only the chosen messages
change a state. The Node-RED peer's function node checks the same five (`NODE_RED_RULES`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

SHARES = (0.02, 1.0, 10.0)  # percent of messages that change an alert state

# Per family: the field values of each shaped rule, (alarm, calm). Bins and fire sensors
# alternate by device number between their two rules so both kinds occur.
_STATES: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "bin": {
        "bin_full": ({"fill_pct": 92.0}, {"fill_pct": 35.0}),
        "bin_smouldering": ({"temp_c": 66.0}, {"temp_c": 21.0}),
    },
    "fire": {"smoke_alarm": ({"smoke_alarm": True}, {"smoke_alarm": False})},
    "wristband": {
        "blood_pressure_crisis": ({"systolic": 188, "diastolic": 96}, {"systolic": 128, "diastolic": 80}),
    },
}
_SOS = {"sos": True}

# The Node-RED function node: the five rules above as sensord's defaults write them, with
# their hysteresis; `msg.flips` is how many alert states this message changed.
NODE_RED_RULES = """\
const parts = msg.topic.split('/');
const family = parts[2], dev = parts[3], p = msg.payload;
const firing = context.get('firing'), sos = context.get('sos');
let flips = 0;
function step(key, on, off) {
  if (!firing.has(key)) { if (on) { firing.add(key); return 1; } }
  else if (off) { firing.delete(key); return 1; }
  return 0;
}
if (family === 'bin') {
  flips += step(dev + '/full', p.fill_pct >= 80, p.fill_pct < 70);
  flips += step(dev + '/smoulder', p.temp_c >= 60, p.temp_c < 50);
} else if (family === 'fire') {
  flips += step(dev + '/smoke', p.smoke_alarm === true, p.smoke_alarm === false);
} else if (family === 'wristband') {
  if (p.sos === true && !sos.has(dev)) { sos.add(dev); flips += 1; }
  flips += step(dev + '/bp', p.systolic >= 180 || p.diastolic >= 120, p.systolic < 170 && p.diastolic < 110);
}
msg.flips = flips;
return msg;
"""
NODE_RED_RULES_START = "context.set('firing', new Set());\ncontext.set('sos', new Set());\n"


@dataclass
class _Device:
    """A touched device: which rule it flips and whether that rule is firing."""

    rule: str
    firing: bool = False
    sos_pressed: bool = False


def _rule_for(family: str, device_id: str) -> str:
    rules = list(_STATES[family])
    number = int("".join(c for c in device_id if c.isdigit()) or "0")
    return rules[number % len(rules)]


def _flip(family: str, dev: _Device) -> dict[str, Any]:
    """The fields of the message that changes the device's state."""
    if family == "wristband" and not dev.sos_pressed:  # a resident presses SOS once
        dev.sos_pressed = True
        return {**_calm(family, dev), **_SOS}
    dev.firing = not dev.firing
    return _calm(family, dev)


def _calm(family: str, dev: _Device) -> dict[str, Any]:
    """The fields that keep the device where it is (alarm values while firing)."""
    alarm, calm = _STATES[family][dev.rule]
    return dict(alarm if dev.firing else calm)


def shape(
    msgs: list[tuple[str, bytes]], share_pct: float, *, seed: int = 1
) -> tuple[list[tuple[str, bytes]], int]:
    """`msgs` with about `share_pct` % of them rewritten to change an alert state; returns
    the new backlog and how many messages were shaped to flip (the requested share)."""
    eligible = [i for i, (topic, _) in enumerate(msgs) if topic.split("/")[2] in _STATES]
    want = min(round(len(msgs) * share_pct / 100), len(eligible))
    chosen = set(random.Random(seed).sample(eligible, want))
    touched: dict[str, _Device] = {}
    out: list[tuple[str, bytes]] = []
    for i, (topic, payload) in enumerate(msgs):
        _, _, family, device_id, _ = topic.split("/")
        dev = touched.get(device_id)
        if dev is None and i not in chosen:
            out.append((topic, payload))
            continue
        if dev is None:
            dev = touched[device_id] = _Device(_rule_for(family, device_id))
        fields = _flip(family, dev) if i in chosen else _calm(family, dev)
        out.append((topic, orjson.dumps({**orjson.loads(payload), **fields})))
    return out, want
