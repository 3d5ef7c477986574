"""The dependencies pyproject.toml declares are the ones the code imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Test helpers shipped in the package; they may use the `dev` extra (a test SMTP server).
TESTING = ROOT / "src" / "sensord" / "testing"
# Distribution name → the top-level module it installs, where the two differ.
MODULE_OF = {"pyyaml": "yaml", "prometheus-client": "prometheus_client", "paho-mqtt": "paho"}
BENCH_ONLY = {"gmqtt", "paho-mqtt"}


def _project() -> Any:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def _names(requirements: list[str]) -> set[str]:
    """`numpy>=1.26` → `numpy`, lower-cased as the registry compares them."""
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def _module(dist: str) -> str:
    return MODULE_OF.get(dist, dist.replace("-", "_"))


def _imported(folder: Path, *, skip: Path | None = None) -> set[str]:
    """Top-level modules imported by any .py file under folder (relative imports aside),
    leaving out the files under `skip`."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        if skip is not None and path.is_relative_to(skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


class TestDependencies:
    def test_every_runtime_dependency_is_imported_by_the_package(self) -> None:
        """Each of [project] dependencies is imported somewhere in src/: none installed for nothing."""
        unused = {d for d in _names(_project()["dependencies"]) if _module(d) not in _imported(ROOT / "src")}
        assert not unused

    def test_every_third_party_import_of_the_package_is_declared(self) -> None:
        """A module src/ imports (its test helpers aside) is the standard library, sensord,
        or a declared runtime dependency."""
        declared = {_module(d) for d in _names(_project()["dependencies"])}
        imported = _imported(ROOT / "src", skip=TESTING)
        third_party = imported - set(sys.stdlib_module_names) - {"sensord"}
        assert third_party <= declared

    def test_test_helpers_import_only_runtime_and_dev_dependencies(self) -> None:
        """sensord.testing (shipped test helpers: the SMTP server needs aiosmtpd) imports the
        standard library, sensord, runtime dependencies or the `dev` extra, nothing else."""
        project = _project()
        allowed = project["dependencies"] + project["optional-dependencies"]["dev"]
        declared = {_module(d) for d in _names(allowed)}
        third_party = _imported(TESTING) - set(sys.stdlib_module_names) - {"sensord"}
        assert third_party <= declared

    def test_client_libraries_compared_by_the_benchmark_are_a_bench_extra(self) -> None:
        """gmqtt and paho-mqtt are in the `bench` extra and nowhere else in pyproject.toml."""
        project = _project()
        extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
        assert extras.get("bench", set()) >= BENCH_ONLY
        elsewhere = [_names(project["dependencies"])] + [v for k, v in extras.items() if k != "bench"]
        assert not any(names & BENCH_ONLY for names in elsewhere)

    def test_package_and_tests_do_not_import_bench_only_libraries(self) -> None:
        """Neither src/ nor tests/ imports gmqtt or paho, so installing without `bench` runs them."""
        bench_modules = {_module(d) for d in BENCH_ONLY}
        assert not (_imported(ROOT / "src") | _imported(ROOT / "tests")) & bench_modules
