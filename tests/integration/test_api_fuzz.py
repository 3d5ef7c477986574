"""The API's OpenAPI document, fuzzed (schemathesis): calls made from it, valid and not,
as an admin, over a real outbox and desk with a real work order in it, never get a 5xx,
and every error is JSON `{"error", "reason"}`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.unit._api_app import Api, api_over, headers

pytestmark = pytest.mark.integration


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_over(tmp_path) as a:
        yield a


def check(case: Any) -> None:
    response = case.call(headers=headers("boss"))
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "reason"}, body
        assert isinstance(body["reason"], str)
        assert body["reason"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_every_error_is_error_and_reason(api: Api, mode: GenerationMode) -> None:
    """Across every operation, valid calls (positive) and calls that break the document
    (negative): no 5xx, and every 4xx is a JSON object with exactly `error` and `reason`."""
    api.sos()
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.client.app)

    @given(case=schema.as_strategy(mode))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        check(case)

    run()


def test_actions_on_a_real_work_order(api: Api) -> None:
    """The work-order operations with the id of a real SOS work order: whatever the
    sequence of actions and bodies, answers are 2xx or an error body, never a 5xx."""
    wo = api.sos()
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.client.app)
    orders = schema.include(path_regex=r"/work-orders/\{wo_id\}")

    @given(case=orders.as_strategy(path_parameters={"wo_id": wo}))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        check(case)

    run()
