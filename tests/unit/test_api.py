"""The public API of each package is what its `__init__` re-exports, and `__all__` says so."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = [
    "sensord.alerts",
    "sensord.channels",
    "sensord.decode",
    "sensord.dispatch",
    "sensord.ingest",
    "sensord.outbox",
    "sensord.replay",
    "sensord.report",
    "sensord.rules",
    "sensord.ruletest",
    "sensord.shard",
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


@pytest.mark.parametrize("name", PACKAGES)
def test_package_imports_first_in_a_fresh_interpreter(name: str) -> None:
    """Each package can be the first one a program imports (no import cycle that only
    works in some orders: `bench/faults.py` starts with `sensord.outbox`)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
