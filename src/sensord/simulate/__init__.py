"""Simulated device traffic for demos and field tests."""

from sensord.simulate._command import main
from sensord.simulate._generate import (
    Message,
    SimDevice,
    devices,
    generate,
    publish,
    registry_for,
    start_time,
)
from sensord.simulate._scenario import Incident, Scenario, load_scenario

__all__ = [
    "Incident",
    "Message",
    "Scenario",
    "SimDevice",
    "devices",
    "generate",
    "load_scenario",
    "main",
    "publish",
    "registry_for",
    "start_time",
]
