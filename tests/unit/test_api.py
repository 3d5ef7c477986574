"""The public API of each package is what its `__init__` re-exports, and `__all__` says so."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "sensord.alerts",
    "sensord.channels",
    "sensord.decode",
    "sensord.ingest",
    "sensord.outbox",
    "sensord.replay",
    "sensord.report",
    "sensord.rules",
    "sensord.ruletest",
    "sensord.simulate",
    "sensord.sinks",
    "sensord.testing",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    """Every public name a package defines or re-exports is in `__all__`, and nothing else."""
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert set(module.__all__) == public
