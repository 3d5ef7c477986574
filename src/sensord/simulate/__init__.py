"""Simulated device traffic for demos and field tests."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import yaml

from sensord.replay import write_recording
from sensord.simulate._generate import Message, SimDevice, devices, generate, publish, registry_for
from sensord.simulate._scenario import Incident, Scenario, load_scenario


def main(args: argparse.Namespace) -> int:
    """`sensord simulate`: publish a scenario, or write its device registry."""
    scenario = load_scenario(args.scenario)
    if args.registry_out is not None:
        args.registry_out.write_text(yaml.safe_dump(registry_for(scenario), sort_keys=False))
        return 0
    if args.out is not None:
        start = args.start if args.start is not None else time.time() - scenario.duration_s
        stream = (
            (ts, topic, payload)
            for ts, topic, payload, _ in generate(scenario, seed=args.seed, start_ts=start)
        )
        n = write_recording(args.out, stream)
        sys.stdout.write(f"wrote {n} messages to {args.out}\n")
        return 0
    n = asyncio.run(
        publish(
            scenario, host=args.host, port=args.port, speed=args.speed, seed=args.seed, start_ts=args.start
        )
    )
    sys.stdout.write(f"published {n} messages\n")
    return 0


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
]
