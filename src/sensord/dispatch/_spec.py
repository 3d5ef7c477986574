"""The dispatch file: receivers (who gets alerts, on which channels) and the routing tree.

Its own file beside sensord.yaml (`dispatch: dispatch.yaml`), shaped like an
Alertmanager config so an operator coming from one reads it at once:

    receivers:
      - name: elder_care_desk
        locale: zh-CN
        people: [{name: 值班台, phone: "+86 21 5555 0100"}]
        channels: [...]
      - name: grid_worker
        recipients: grid          # the workers of the alert's grid (registry `grids:`)
        channels: [...]
    route:
      receiver: webhook           # the default; `webhook` is sinks.webhook when configured
      group_by: [community, grid, rule]
      routes:
        - matchers: ['family="bin"']
          receiver: sanitation
        - matchers: ['life_safety="true"']
          receiver: elder_care_desk
          continue: true

Every error names the file, the line and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from sensord._errors import ConfigError
from sensord._settings import TimeZoneName
from sensord._types import Locale
from sensord.dispatch._times import TimeEntry
from sensord.rules._spec import Duration

# `name op "value"`, as Alertmanager writes matchers; the value may be unquoted.
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$')
_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Matcher(_Frozen):
    """One label matcher: `=` equal, `!=` not equal, `=~` / `!~` a regex over the whole value."""

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    text: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.label, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = re.fullmatch(self.value, got) is not None
        return hit if self.op == "=~" else not hit


def parse_matcher(value: object) -> Matcher:
    if isinstance(value, Matcher):
        return value
    m = _MATCHER.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'a matcher is label="value" (or !=, =~, !~), got {value!r}')
    label, op, quoted, bare = m.groups()
    text = quoted.replace('\\"', '"') if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"matcher {value!r}: not a valid regular expression: {exc}") from None
    return Matcher.model_validate({"label": label, "op": op, "value": text, "text": str(value).strip()})


MatcherField = Annotated[Matcher, BeforeValidator(parse_matcher)]


class Person(_Frozen):
    """A person a receiver always reaches (a duty desk, a control room's phone)."""

    name: Annotated[str, Field(min_length=1)]
    phone: str | None = None
    email: str | None = None
    chat: dict[str, str] = Field(default_factory=dict)


class ChannelSpec(BaseModel):
    """One channel of a receiver: `type` picks the platform; the other keys are that
    platform's settings, validated by the channel when the daemon builds it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Annotated[str, Field(min_length=1)]


class Receiver(_Frozen):
    """A named destination of alerts: the names rules use in `dispatch:`."""

    name: str
    locale: Locale = "zh-CN"  # grid workers read Chinese; rules render every locale
    # Who the messages are for, per alert: nobody in particular (a team's group chat),
    # the workers of the alert's grid, or the device's contacts (a resident's family).
    recipients: Literal["none", "grid", "contacts"] = "none"
    people: tuple[Person, ...] = ()
    channels: tuple[ChannelSpec, ...] = ()
    # May see readings (heart rate, SpO2, …) and coordinates: desks, doctors, families.
    sensitive: bool = False
    # Readings (by field name) and `coordinates` a sensitive receiver still must not see.
    redact: tuple[str, ...] = ()
    send_resolved: bool = True
    # Tell this receiver when a work order it was sent changes state ("accepted by grid
    # worker Zhang at 10:42"): a family, a desk that wants to know someone is on it.
    work_order_updates: bool = False

    def channel_sinks(self) -> list[str]:
        """The outbox queue of each channel: `receiver/type`, `-2`, `-3` … for repeats."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for c in self.channels:
            base = f"{self.name}/{c.type}"
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return names

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"a receiver name is lower-case letters, digits, _ and -, got {v!r}")
        return v


class Route(_Frozen):
    """A node of the routing tree. Unset settings are inherited from the parent."""

    receiver: str | None = None
    matchers: tuple[MatcherField, ...] = ()
    continue_: bool = Field(default=False, alias="continue")
    group_by: tuple[str, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    # Quiet hours: names from `time_intervals`. Muted (or outside every active interval),
    # a group's message is deferred to the end of the mute (default) or dropped.
    mute_time_intervals: tuple[str, ...] | None = None
    active_time_intervals: tuple[str, ...] | None = None
    on_mute: Literal["defer", "drop"] | None = None
    # The escalation policy (a name from `escalations`) for the work orders opened here.
    escalation: str | None = None
    routes: tuple[Route, ...] = ()


class InhibitRule(_Frozen):
    """While an alert matching `source_matchers` fires, ordinary alerts matching
    `target_matchers` with the same values of the `equal` labels are held back (told
    once the source ends, if they still fire). `reason` is required: it is logged."""

    source_matchers: Annotated[tuple[MatcherField, ...], Field(min_length=1)]
    target_matchers: Annotated[tuple[MatcherField, ...], Field(min_length=1)]
    equal: tuple[str, ...] = ()
    reason: Annotated[str, Field(min_length=1)]


class EscalationStep(_Frozen):
    """Who is told at this step, and how long they have to accept before the next one."""

    notify: tuple[str, ...] = ()
    ack_timeout: Duration | None = None


class EscalationPolicy(_Frozen):
    """Steps taken while nobody accepts a work order. The first step is the first
    notification (its `notify` receivers join the route's); each later step is taken
    when the previous one's `ack_timeout` passes with nobody accepting. After the last,
    `repeat` more rounds from the first step. `accept_expiry`: accepted but not done in
    this long, the next step is taken as if nobody had accepted."""

    steps: Annotated[tuple[EscalationStep, ...], Field(min_length=1)]
    repeat: Annotated[int, Field(ge=0, le=100)] = 0
    accept_expiry: Duration | None = None


FamilyName = Literal["bin", "fire", "lift", "water", "charger", "wristband"]


class Sla(_Frozen):
    """Deadlines of a family's work orders, from dispatch: accepted within, done within."""

    accept: Duration | None = None
    done: Duration | None = None


class WorkOrderSpec(_Frozen):
    """Work-order settings: a done job closes by itself after `close_after` without feedback."""

    close_after: Duration = 72 * 3600.0


class DispatchSpec(_Frozen):
    """The whole dispatch file."""

    receivers: tuple[Receiver, ...] = ()
    route: Route = Route()
    inhibit_rules: tuple[InhibitRule, ...] = ()
    time_intervals: dict[str, tuple[TimeEntry, ...]] = Field(default_factory=dict)
    # The longest silence `sensord silence add` accepts: a forgotten silence must end.
    max_silence: Duration = 72 * 3600.0
    # Times in messages (and, later, quiet hours) are local to the communities.
    timezone: TimeZoneName = "Asia/Shanghai"
    # The receivers a rule names in `dispatch:` are reached too (with the settings of the
    # route the alert lands on), so the rule owner's intent holds without a route each.
    rule_dispatch: bool = True
    # Work orders (README: Work orders): escalation policies by name, deadlines by family.
    escalations: dict[str, EscalationPolicy] = Field(default_factory=dict)
    sla: dict[FamilyName, Sla] = Field(default_factory=dict)
    work_orders: WorkOrderSpec = WorkOrderSpec()


def line_at(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node along `loc` in a composed YAML document."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next(((k, v) for k, v in node.value if k.value == part), None)
            if nxt is None:
                break
            line, node = nxt[0].start_mark.line + 1, nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


class LoadedDispatch:
    """A validated dispatch file with the YAML node tree kept for error lines."""

    def __init__(self, path: Path, spec: DispatchSpec, node: yaml.Node | None) -> None:
        self.path = path
        self.spec = spec
        self._node = node

    def where(self, *loc: int | str) -> str:
        """`file:line` of a key path, e.g. where("route", "routes", 0, "receiver")."""
        return f"{self.path}:{line_at(self._node, loc)}"


def read_dispatch(path: Path) -> LoadedDispatch:
    """Parse and validate a dispatch file; ConfigError names file:line and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read dispatch file: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=where) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a dispatch file is a mapping with receivers and route", source=f"{path}:1")
    try:
        spec = DispatchSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if isinstance(p, int | str))
        # Pydantic names a field by its alias, and puts the failing validator's type in loc.
        key = ".".join(str(p) for p in loc)
        raise ConfigError(err["msg"], source=f"{path}:{line_at(node, loc)}", key=key) from None
    return LoadedDispatch(path, spec, node)


def spec_from(data: dict[str, Any]) -> DispatchSpec:
    """A dispatch spec from a mapping (tests, `routes test` without a file)."""
    return DispatchSpec.model_validate(data)
