"""`sensord simulate`: publish a scenario, write it to a recording, or write its registry;
with `--responders FILE`, answer work orders through the API as simulated people."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys

import yaml

from sensord._errors import SensordError
from sensord._logging import configure_logging
from sensord._settings import LogSettings
from sensord.replay import Progress, RecordingWriter
from sensord.simulate._generate import generate, publish, registry_for, start_time
from sensord.simulate._respond import Responders
from sensord.simulate._responders import load_responders
from sensord.simulate._scenario import load_scenario


def main(args: argparse.Namespace) -> int:
    """`sensord simulate`: publish a scenario, or write its device registry."""
    if args.responders is not None:
        return respond(args)
    scenario = load_scenario(args.scenario)
    if args.registry_out is not None:
        args.registry_out.write_text(yaml.safe_dump(registry_for(scenario), sort_keys=False))
        return 0
    if args.out is not None:
        start = start_time(scenario, args.start)
        show = Progress("generated")
        n = 0
        stream = generate(scenario, seed=args.seed, start_ts=start)
        with RecordingWriter(args.out) as out:
            while chunk := [
                (ts, topic, payload) for ts, topic, payload, _ in itertools.islice(stream, 10_000)
            ]:
                out.write_many(chunk)
                n += len(chunk)
                show.add(len(chunk))
        show.done()
        sys.stdout.write(f"wrote {n} messages to {args.out}\n")
        return 0
    speed = None if args.fast else args.speed
    n = asyncio.run(
        publish(
            scenario,
            host=args.host,
            port=args.port,
            speed=speed,
            seed=args.seed,
            start_ts=args.start,
            progress=True,
        )
    )
    sys.stdout.write(f"published {n} messages\n")
    return 0


def respond(args: argparse.Namespace) -> int:
    """`sensord simulate --responders FILE --api URL`: act on work orders until stopped."""
    configure_logging(LogSettings(format="text"))
    try:
        spec = load_responders(args.responders)
        tokens = spec.tokens(args.responders.parent)
    except SensordError as exc:
        sys.stderr.write(f"sensord simulate: {exc}\n")
        return 2
    people = Responders(spec, tokens, api=args.api, seed=args.seed, poll_s=args.poll)
    try:
        asyncio.run(people.run(args.duration))
    except KeyboardInterrupt:
        pass
    except SensordError as exc:
        sys.stderr.write(f"sensord simulate: {exc}\n")
        return 1
    sys.stdout.write(f"responders: {people.tally.line()}\n")
    return 0
