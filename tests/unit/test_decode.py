"""Unit tests for the batched decoder."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from sensord._registry import Registry, parse_registry
from sensord._settings import DecodeSettings
from sensord._types import Family, RawMessage
from sensord.decode import Decoder, TopicTemplate

NOW = 1_790_000_000.0


@pytest.fixture
def registry() -> Registry:
    return parse_registry(
        {
            "devices": {
                "bin-1": {"family": "bin", "community": "maple", "grid": "g1"},
                "bin-2": {"family": "bin", "community": "maple", "grid": "g1"},
                "wb-1": {"family": "wristband", "community": "maple", "grid": "g2"},
                "lift-1": {"family": "lift", "community": "maple", "grid": "g2"},
            }
        },
        source="test",
    )


@pytest.fixture
def decoder(registry: Registry) -> Decoder:
    return Decoder(
        registry, DecodeSettings(max_payload_bytes=512), "sensord/{community}/{family}/{device_id}/{kind}"
    )


def msg(family: str, device: str, payload: object, *, raw: bytes | None = None) -> RawMessage:
    body = raw if raw is not None else orjson.dumps(payload)
    return RawMessage(f"sensord/maple/{family}/{device}/telemetry", body, NOW, None)


class TestTopicTemplate:
    def test_parses_all_parts(self) -> None:
        """Each placeholder's level is returned by name."""
        t = TopicTemplate("sensord/{community}/{family}/{device_id}/{kind}")
        p = t.parse("sensord/maple/bin/bin-1/telemetry")
        assert p is not None
        assert (p.community, p.family, p.device_id, p.kind) == ("maple", "bin", "bin-1", "telemetry")

    def test_rejects_wrong_prefix_or_depth(self) -> None:
        """A topic with another literal prefix or level count does not match."""
        t = TopicTemplate("sensord/{community}/{family}/{device_id}/{kind}")
        assert t.parse("other/maple/bin/bin-1/telemetry") is None
        assert t.parse("sensord/maple/bin/bin-1") is None


class TestDecoder:
    def test_good_messages_become_columns(self, decoder: Decoder) -> None:
        """Valid payloads become float64 columns by family, bools 0/1, enums as codes, missing NaN."""
        res = decoder(
            [
                msg("bin", "bin-1", {"fill_pct": 81.5, "ts": NOW - 5}),
                msg("bin", "bin-2", {"fill_pct": 10, "temp_c": 20}),
                msg("lift", "lift-1", {"state": "stopped", "door_open": False}),
            ]
        )
        assert res.rejects == []
        b = res.batches[Family.BIN]
        assert b.columns["fill_pct"].tolist() == [81.5, 10.0]
        assert math.isnan(b.columns["temp_c"][0])
        assert b.ts.tolist() == [NOW - 5, NOW]
        assert b.device.tolist() == [0, 1]
        lift = res.batches[Family.LIFT]
        assert lift.columns["state"].tolist() == [2.0]
        assert lift.columns["door_open"].tolist() == [0.0]

    @pytest.mark.parametrize(
        ("family", "device", "payload", "raw", "reason"),
        [
            ("bin", "bin-1", None, b"{not json", "invalid_json"),
            ("bin", "bin-1", None, b'{"fill_pct": NaN}', "non_finite"),
            ("bin", "bin-1", None, b'{"fill_pct": 1e999}', "non_finite"),
            ("bin", "bin-1", [1, 2], None, "not_object"),
            ("bin", "bin-1", {"fill_pct": "80"}, None, "wrong_type"),
            ("bin", "bin-1", {"fill_pct": -3}, None, "out_of_range"),
            ("wristband", "wb-1", {"heart_rate": 900}, None, "out_of_range"),
            ("bin", "bin-1", {"temp_c": 20}, None, "missing_field"),
            ("lift", "lift-1", {"state": "flying"}, None, "invalid_value"),
            ("wristband", "wb-1", {"colour": "red"}, None, "no_known_fields"),
            ("bin", "bin-1", {"fill_pct": 5, "ts": "yesterday"}, None, "bad_timestamp"),
            ("bin", "bin-1", {"fill_pct": 5, "ts": NOW + 3600}, None, "future_timestamp"),
            ("bin", "bin-1", {"fill_pct": 5, "pad": "x" * 600}, None, "oversized"),
            ("toaster", "bin-1", {"fill_pct": 5}, None, "unknown_family"),
            ("wristband", "bin-1", {"fill_pct": 5}, None, "family_mismatch"),
        ],
    )
    def test_bad_message_is_rejected_with_reason(
        self,
        decoder: Decoder,
        family: str,
        device: str,
        payload: object,
        raw: bytes | None,
        reason: str,
    ) -> None:
        """Each kind of bad input becomes one reject with its reason label and a detail."""
        res = decoder([msg(family, device, payload, raw=raw)])
        assert [r.reason for r in res.rejects] == [reason]
        assert res.rejects[0].detail
        assert res.accepted == 0

    def test_bad_rows_do_not_affect_good_rows(self, decoder: Decoder) -> None:
        """In a mixed batch the good rows survive intact and in order."""
        res = decoder(
            [
                msg("bin", "bin-1", {"fill_pct": 50}),
                msg("bin", "bin-2", {"fill_pct": "full"}),
                msg("bin", "bin-2", {"fill_pct": 90}),
            ]
        )
        assert [r.reason for r in res.rejects] == ["wrong_type"]
        assert res.batches[Family.BIN].columns["fill_pct"].tolist() == [50.0, 90.0]
        assert res.accepted == 2

    def test_unknown_device_is_listed_and_kept(self, decoder: Decoder) -> None:
        """A device id missing from the registry is listed for the operator and rejected as
        `unknown_device`, so its message goes to dead-letter and can be replayed later."""
        res = decoder([msg("bin", "bin-99", {"fill_pct": 50})])
        assert [r.reason for r in res.rejects] == ["unknown_device"]
        assert "register it" in res.rejects[0].detail
        assert res.unknown == {Family.BIN: ["bin-99"]}

    def test_rfc3339_timestamp(self, decoder: Decoder) -> None:
        """`ts` may be RFC 3339 text."""
        res = decoder([msg("bin", "bin-1", {"fill_pct": 1, "ts": "2026-09-21T12:00:00Z"})])
        assert res.batches[Family.BIN].ts[0] == pytest.approx(1789992000.0)

    def test_integer_field_rejects_fraction(self, decoder: Decoder) -> None:
        """An integer field (lift floor) with a fractional value is out of range."""
        res = decoder([msg("lift", "lift-1", {"state": "idle", "floor": 2.5})])
        assert [r.reason for r in res.rejects] == ["out_of_range"]

    def test_large_batch_is_vectorised_correctly(self, decoder: Decoder) -> None:
        """Thousands of rows decode to the same values they were sent with."""
        vals = np.linspace(0, 100, 5000)
        res = decoder([msg("bin", "bin-1", {"fill_pct": float(v)}) for v in vals])
        np.testing.assert_allclose(res.batches[Family.BIN].columns["fill_pct"], vals)
