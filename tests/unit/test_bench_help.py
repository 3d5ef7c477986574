"""Every benchmark prints its usage: `--help` is how an operator finds a benchmark's
options, and a stray '%' in a help text made argparse crash there instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# clients.py compares MQTT libraries sensord does not use: it needs `.[bench]`.
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "clients.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage(script: str) -> None:
    """`bench/<script> --help` exits 0 and prints its usage."""
    cmd = [sys.executable, str(BENCH / script), "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:")
