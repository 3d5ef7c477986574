"""The judge of the fault-injection suite finds each broken promise it is meant to find
(a suite whose checker cannot fail proves nothing)."""

from __future__ import annotations

from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.sinks._webhook import webhook_body
from sensord.testing import Received, judge

T0 = 1_790_000_000.0


def _event(
    rule: str, device: str, status: str, starts: float, at: float, *, ls: bool = True, eid: str | None = None
) -> AlertEvent:
    return AlertEvent(
        event_id=eid or f"{rule}|{device}|{status}|{starts}|{at}",
        fingerprint=f"fp-{rule}-{device}",
        status=AlertStatus(status),
        rule=rule,
        severity=Severity.CRITICAL,
        life_safety=ls,
        family="wristband",
        device_id=device,
        community="maple",
        grid="g1",
        location={},
        labels={},
        summary="",
        description="",
        readings={},
        dispatch=(),
        starts_at=starts,
        ends_at=at if status == "resolved" else None,
        event_time=at,
    )


def _got(e: AlertEvent, at: float, code: int = 200) -> Received:
    return Received({"webhook-id": e.event_id}, webhook_body(e), b"", valid=True, answered=code, at=at)


SOS_ON = _event("wristband_sos", "wb-1", "firing", T0, T0)
SOS_OFF = _event("wristband_sos", "wb-1", "resolved", T0, T0 + 30)
BIN_ON = _event("bin_full", "bin-1", "firing", T0, T0 + 5, ls=False)


class TestJudge:
    def test_a_clean_run_has_no_problems(self) -> None:
        """Every reference event delivered once, in order: nothing to report."""
        f = judge([_got(SOS_ON, 1), _got(BIN_ON, 2), _got(SOS_OFF, 3)], [SOS_ON, BIN_ON, SOS_OFF])
        assert f.problems(exact=True) == []

    def test_a_second_resolved_under_a_new_id_is_a_resurrection(self) -> None:
        """The same (rule, device, status, startsAt) under two webhook ids is reported, and
        as resurrected when it is a `resolved`."""
        again = _event("wristband_sos", "wb-1", "resolved", T0, T0 + 90)
        f = judge([_got(SOS_ON, 1), _got(SOS_OFF, 2), _got(again, 3)], [SOS_ON, SOS_OFF])
        assert [k[:3] for k in f.resurrected] == [("wristband_sos", "wb-1", "resolved")]
        assert any("two webhook ids" in p for p in f.problems(exact=False))

    def test_a_missing_life_safety_event_is_reported_even_when_not_exact(self) -> None:
        """A life-safety transition of the reference never answered 200 is missing."""
        f = judge([_got(SOS_ON, 1), _got(SOS_OFF, 2, code=503)], [SOS_ON, SOS_OFF])
        assert [k[:3] for k in f.missing_ls] == [("wristband_sos", "wb-1", "resolved")]
        assert f.problems(exact=False)

    def test_resolved_before_its_firing_is_out_of_order(self) -> None:
        """Per fingerprint, a `resolved` arriving before its `firing` is an order problem."""
        f = judge([_got(SOS_OFF, 1), _got(SOS_ON, 2)], [SOS_ON, SOS_OFF])
        assert len(f.out_of_order) == 1

    def test_a_redelivered_id_is_not_an_order_problem_but_counts_when_exact(self) -> None:
        """The same id twice (at-least-once) is not out of order; an exact run reports it."""
        f = judge([_got(SOS_ON, 1), _got(SOS_OFF, 2), _got(SOS_ON, 3)], [SOS_ON, SOS_OFF])
        assert f.out_of_order == []
        assert f.repeated_ids == 1
        assert f.problems(exact=False) == []
        assert f.problems(exact=True)

    def test_life_safety_behind_an_ordinary_event_after_recovery(self) -> None:
        """After recovery, a waiting life-safety event that arrives after a waiting ordinary
        one is reported; one delivered before recovery was not waiting."""
        f = judge([_got(SOS_ON, 1), _got(BIN_ON, 11), _got(SOS_OFF, 12)], [SOS_ON, BIN_ON, SOS_OFF],
                  recovered_at=10)
        assert (f.waiting_ls, f.waiting_ordinary, f.ls_after_ordinary) == (1, 1, 1)
        assert f.ls_waits == [2]
