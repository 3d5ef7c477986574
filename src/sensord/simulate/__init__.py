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
from sensord.simulate._respond import Responders, Tally
from sensord.simulate._responders import (
    DONE_NOTE,
    Match,
    Plan,
    Responder,
    ResponderSpec,
    Step,
    load_responders,
    next_step,
    plan,
)
from sensord.simulate._scenario import Incident, Scenario, load_scenario

__all__ = [
    "DONE_NOTE",
    "Incident",
    "Match",
    "Message",
    "Plan",
    "Responder",
    "ResponderSpec",
    "Responders",
    "Scenario",
    "SimDevice",
    "Step",
    "Tally",
    "devices",
    "generate",
    "load_responders",
    "load_scenario",
    "main",
    "next_step",
    "plan",
    "publish",
    "registry_for",
    "start_time",
]
