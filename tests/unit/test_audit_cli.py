"""`sensord audit`: the audit log from the outbox database, read-only while the daemon
holds it open, one line (or JSON object) per entry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sensord._cli import main

from ._api_app import Api, api_over


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_over(tmp_path) as a:
        yield a


def config(tmp_path: Path) -> str:
    path = tmp_path / "audit.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    return str(path)


def test_lines_name_who_did_what_from_where(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the daemon's outbox is open, each action is a line: time, client, role,
    action, work order, address, and what was said."""
    wo = api.sos()
    api.act(wo, "accept", {"by": "张伟"})
    api.act(wo, "done", {"note": "电池已更换"})
    assert main(["audit", "-c", config(tmp_path)]) == 0
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert [ln[1:6] for ln in lines] == [
        ["desk", "act", "accept", wo, "198.51.100.7"],
        ["desk", "act", "done", wo, "198.51.100.7"],
    ]
    assert '"by":"张伟"' in lines[0][6]
    assert '"note":"电池已更换"' in lines[1][6]


def test_json_and_since(api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives one object per entry; --since leaves out what is older."""
    wo = api.sos()
    api.act(wo, "accept", {})
    assert main(["audit", "-c", config(tmp_path), "--json", "--since", "1h"]) == 0
    [entry] = [orjson.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert (entry["who"], entry["action"], entry["target"]) == ("desk", "accept", wo)
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
    assert main(["audit", "-c", config(tmp_path), "--since", later]) == 0
    assert capsys.readouterr().out == ""


def test_bad_since_and_missing_database_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --since that is neither a duration nor ISO, and a state_dir without an outbox,
    are exit 1 with the reason; no database is created by looking."""
    assert main(["audit", "-c", config(tmp_path), "--since", "last week"]) == 1
    assert "neither a span" in capsys.readouterr().err
    assert main(["audit", "-c", config(tmp_path)]) == 1
    assert "no outbox database" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
