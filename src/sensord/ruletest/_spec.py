"""Rule test files: input series per device and the alerts expected at given times.

    rule_files: [../wristband.yaml]      # default: every rule file in the folder above
    interval: 10s                         # step of the compact series (default 10s)
    rules: [heart_rate_abnormal]          # compare only these rules' alerts (default: all)
    devices:                              # registry entries; community/grid default to test/g1
      wb-1: {family: wristband}
      wb-2: {family: wristband, params: {hr_high: 110}}
    tests:
      - name: sustained high heart rate pages after 30 s
        input:
          wb-1:
            heart_rate: "80 130x5 80x3"   # compact series, one value per interval
          wb-2:
            points:                       # explicit points
              - {at: 0s, heart_rate: 115}
        expect:
          - at: 20s
            alerts: []                    # explicitly: no alert
          - at: 40s
            alerts:
              - {rule: heart_rate_abnormal, device: wb-1, severity: warning, labels: {team: elder-care}}
        events:                           # optional: every notification of the case
          - {rule: heart_rate_abnormal, device: wb-1, status: firing, at: 40s,
             summary: {zh-CN: "心率异常：手环 wb-1 心率 130 次/分，请电话回访"}}   # optional, per locale

Compact series (as in promtool): `a` one value, `axn` a then n more copies (n+1 values),
`a+bxn` / `a-bxn` a then n more values stepping by b, `_` no reading, `_xn` n+1 gaps.
`true` / `false` for flags and the value's name for text fields (`stopped x3`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensord._errors import RuleError
from sensord._types import Locale, Severity
from sensord.rules._spec import Duration, yaml_error

_TOKEN = re.compile(r"^(?P<value>.+?)(?:(?P<sign>[+-])(?P<step>\d+(?:\.\d+)?))?(?:x(?P<n>\d+))?$")

Value = float | bool | str | None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Point(BaseModel):
    """An explicit reading: `at` plus field values."""

    model_config = ConfigDict(frozen=True, extra="allow")

    at: Duration

    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ExpectedAlert(_Model):
    rule: str
    device: str
    status: Literal["pending", "firing"] = "firing"
    severity: Severity | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Expectation(_Model):
    at: Duration
    alerts: tuple[ExpectedAlert, ...] = ()


class ExpectedEvent(_Model):
    """A notification expected over the whole case (firing / resolved), at a time, and
    optionally its summary as sent, per locale (`summary: {zh-CN: "…"}`)."""

    rule: str
    device: str
    status: Literal["pending", "firing", "resolved"]
    at: Duration
    summary: dict[Locale, str] = Field(default_factory=dict)


class Ack(_Model):
    """An acknowledgement from the dispatch side, sent on its ack topic at `at`."""

    at: Duration
    device: str
    rule: str
    by: str = "test"


class ExpectedNotice(_Model):
    """A message a receiver gets (with the file's `dispatch:`), at the event time it is made."""

    receiver: str
    at: Duration


class Case(_Model):
    name: Annotated[str, Field(min_length=1)]
    acks: tuple[Ack, ...] = ()
    interval: Duration | None = None  # this case's series step, if not the file's
    # Compare only the alerts of these rules (default: the file's `rules`, else all).
    rules: tuple[str, ...] | None = None
    # Only these of the file's devices exist in this case (no-data rules see the others).
    devices: tuple[str, ...] | None = None
    input: dict[str, dict[str, Any]] = Field(default_factory=dict)
    expect: tuple[Expectation, ...] = ()
    events: tuple[ExpectedEvent, ...] | None = None
    # Every message of the case per receiver (needs the file's `dispatch:`).
    notifications: tuple[ExpectedNotice, ...] | None = None


class TestFile(_Model):
    rule_files: tuple[Path, ...] = ()
    # A dispatch file (relative to the test file): cases may then state `notifications`.
    dispatch: Path | None = None
    rules: tuple[str, ...] | None = None
    interval: Duration = 10.0
    devices: dict[str, dict[str, Any]]
    tests: tuple[Case, ...]


def _scalar(text: str) -> Value:
    low = text.lower()
    if low == "_":
        return None
    if low in {"true", "false"}:
        return low == "true"
    try:
        return float(text)
    except ValueError:
        return text


def expand_series(text: str) -> list[Value]:
    """Compact series notation → one value (or None for a gap) per interval."""
    out: list[Value] = []
    for token in str(text).split():
        m = _TOKEN.match(token)
        if m is None:
            raise ValueError(f"cannot read series item {token!r}")
        value = _scalar(m["value"])
        n = int(m["n"]) if m["n"] else 0
        step = float(m["step"]) if m["step"] else 0.0
        if m["sign"] == "-":
            step = -step
        if step and not isinstance(value, float):
            raise ValueError(f"series item {token!r}: only numbers can step")
        out.extend(value + i * step if isinstance(value, float) and step else value for i in range(n + 1))
    return out


def read_test_file(path: Path) -> TestFile:
    """Parse and validate a rule test file; RuleError names file, line and reason."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise RuleError(f"cannot read: {exc.strerror}", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    try:
        return TestFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise RuleError(f"{key}: {err['msg']}", file=str(path)) from None
