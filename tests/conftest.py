"""Shared fixtures. Server fixtures start real processes on free ports in temp dirs."""

pytest_plugins = [
    "tests.fixtures_mqtt",
    "tests.fixtures_sinks",
]
