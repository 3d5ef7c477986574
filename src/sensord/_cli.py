"""The `sensord` command: run, check, rules check|test, replay, simulate, kpi, audit, --version."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sensord import __version__
from sensord._errors import ConfigError, RuleError, SensordError
from sensord._logging import configure_logging
from sensord._registry import Registry, load_registry
from sensord._settings import WEBHOOK_SECRET_PREFIX, LogSettings, Settings, load_settings

log = logging.getLogger("sensord")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensord", description="Telemetry and alerting for neighbourhood sensors."
    )
    p.add_argument("--version", action="version", version=f"sensord {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, required=True, help="config file (YAML)")
    check = sub.add_parser("check", help="validate config, device registry and every rule file")
    check.add_argument("-c", "--config", type=Path, required=True, help="config file (YAML)")
    _simulate_args(sub)
    rules = sub.add_parser("rules", help="rule tooling: check and test rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rcheck = rules_sub.add_parser("check", help="validate rule files (file:line: reason per problem)")
    rcheck.add_argument("files", type=Path, nargs="*", help="rule files or folders (default: rules/)")
    rcheck.add_argument(
        "-c", "--config", type=Path, help="take the device registry (and rules_dir) from here"
    )
    rtest = rules_sub.add_parser("test", help="run rule unit tests (see rules/tests/)")
    rtest.add_argument("files", type=Path, nargs="+", help="test files or folders of *_test.yaml")
    rep = sub.add_parser("replay", help="run a recording through the rules offline; print the alert timeline")
    rep.add_argument("recording", type=Path, help="recording (.jsonl or .jsonl.gz)")
    rep.add_argument("-c", "--config", type=Path, help="config whose registry, rules and limits to use")
    rep.add_argument("--rules", type=Path, help="rules folder (overrides the config's)")
    rep.add_argument("--registry", type=Path, help="device registry (overrides the config's)")
    rep.add_argument("--json", action="store_true", help="one JSON object per alert event (webhook body)")
    rep.add_argument("--all", action="store_true", help="include pending events in the timeline")
    rep.add_argument("--compare", type=Path, metavar="RULES_DIR", help="print how these rules' alerts differ")
    rep.add_argument("--report", type=Path, metavar="DIR", help="write an HTML report with plots to DIR")
    rep.add_argument(
        "--notifications",
        action="store_true",
        help="print the messages each receiver would get (needs -c with dispatch)",
    )
    rec = sub.add_parser("record", help="record live traffic from a broker to a file")
    _broker_args(rec)
    rec.add_argument("--topic", action="append", help="topic filter (repeatable; default sensord/#)")
    rec.add_argument("--out", type=Path, required=True, help="recording to write (.jsonl or .jsonl.gz)")
    rec.add_argument("--max-messages", type=int)
    rec.add_argument("--max-seconds", type=float)
    rec.add_argument("--max-mb", type=float, help="stop at this many MB (uncompressed)")
    play = sub.add_parser("play", help="publish a recording to a broker")
    _broker_args(play)
    play.add_argument("recording", type=Path)
    pace = play.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    pace.add_argument("--fast", action="store_true", help="as fast as the broker takes it")
    play.add_argument("--qos", type=int, choices=(0, 1), default=1)
    play.add_argument("--max-inflight", type=int, default=1000)
    _operator_args(sub)
    return p


def _operator_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`sensord outbox status|purge` and `sensord secret new`."""
    outbox = sub.add_parser("outbox", help="inspect the outbox, purge a removed sink's queue")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    status = outbox_sub.add_parser("status", help="events waiting per sink (life-safety, oldest)")
    status.add_argument("-c", "--config", type=Path, required=True, help="config file (YAML)")
    purge = outbox_sub.add_parser("purge", help="drop every waiting delivery of a sink")
    purge.add_argument("-c", "--config", type=Path, required=True, help="config file (YAML)")
    purge.add_argument("--sink", required=True, help="the sink's name (see `sensord outbox status`)")
    dead = sub.add_parser("deadletter", help="replay rejected messages (e.g. of devices registered since)")
    export = dead.add_subparsers(dest="deadletter_command", required=True).add_parser(
        "export", help="write rejected messages as a recording for `sensord play`"
    )
    export.add_argument("files", type=Path, nargs="+", help="dead-letter files (deadletter.jsonl, .1, …)")
    export.add_argument("--reason", action="append", help="only this reason (repeatable): unknown_device")
    export.add_argument("--out", type=Path, required=True, help="recording to write (.jsonl or .jsonl.gz)")
    from sensord._routes import add_parser as add_routes  # noqa: PLC0415 - argparse only

    add_routes(sub)
    from sensord._silence_cli import add_parser as add_silence  # noqa: PLC0415 - argparse only

    add_silence(sub)
    from sensord._kpi_cli import add_parser as add_kpi  # noqa: PLC0415 - argparse only

    add_kpi(sub)

    from sensord._audit_cli import add_parser as add_audit  # noqa: PLC0415 - argparse only

    add_audit(sub)
    from sensord._shard_cli import add_parser as add_shard  # noqa: PLC0415 - argparse only

    add_shard(sub)
    secret = sub.add_parser("secret", help="make secrets")
    secret.add_subparsers(dest="secret_command", required=True).add_parser(
        "new", help="print a new webhook signing secret (whsec_ + base64 of 32 random bytes)"
    )


def _simulate_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`sensord simulate`: publish a scenario, or (--responders) answer work orders."""
    sim = sub.add_parser("simulate", help="publish simulated device traffic to a broker")
    sim.add_argument("scenario", type=Path, nargs="?", default=Path("simulators/neighbourhood.yaml"))
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=1883)
    sim.add_argument("--speed", type=float, default=1.0, help="event time runs this many times wall time")
    sim.add_argument("--fast", action="store_true", help="publish as fast as the broker takes it")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--registry-out", type=Path, help="write the scenario's device registry here and exit")
    sim.add_argument(
        "--out",
        type=Path,
        help="write the stream to this recording (.jsonl or .jsonl.gz) instead of a broker",
    )
    sim.add_argument(
        "--start", type=float, help="event time of the first reading (epoch s; default: the stream ends now)"
    )
    _responder_args(sim)


def _responder_args(sim: argparse.ArgumentParser) -> None:
    """The other half of a field test: simulated people answering the work orders."""
    resp = sim.add_argument_group("responders (instead of publishing: answer work orders through the API)")
    resp.add_argument("--responders", type=Path, metavar="FILE", help="e.g. simulators/responders.yaml")
    resp.add_argument("--api", default="http://127.0.0.1:9109", help="the daemon's API (default %(default)s)")
    resp.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    resp.add_argument("--poll", type=float, default=1.0, metavar="S", help="poll the API every S seconds")


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")


def _check(config: Path) -> int:
    """Report every problem found; exit status 1 if there is any."""
    errors: list[str] = []
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from sensord._shard_cli import check_lines, check_share, subscription_lines  # noqa: PLC0415

    try:
        registry = load_registry(settings.input_path(settings.registry))
        check_share(settings, registry)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from sensord.rules import check_rules  # noqa: PLC0415 - numpy-heavy; only when needed

    rules_dir = settings.input_path(settings.rules_dir)
    errors.extend(str(e) for e in check_rules(rules_dir, registry))
    if settings.dispatch is not None and not errors:
        errors.extend(_check_dispatch(settings, registry))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return 1
    print(f"ok: {config}: {len(registry.by_id)} devices, rules in {rules_dir}")
    for line in [*check_lines(settings, registry), *subscription_lines(settings, registry)]:
        print(line)
    from sensord.ingest import parser_line  # noqa: PLC0415 - the ingest stack only when needed

    print(f"  MQTT parser: {parser_line()}")
    for name, sink in (("influx", settings.sinks.influx), ("webhook", settings.sinks.webhook)):
        if sink is not None:
            # Redacted by SecretUrl: enough to tell which endpoint, never its token.
            print(f"  sink {name}: {sink.url}")
    return 0


def _check_dispatch(settings: Settings, registry: Registry) -> list[str]:
    """The dispatch file's problems (file:line: reason), judged against rules and registry."""
    from sensord.dispatch import Router, check_dispatch, read_dispatch  # noqa: PLC0415
    from sensord.rules import load_rule_files, rule_files  # noqa: PLC0415

    assert settings.dispatch is not None
    try:
        loaded = read_dispatch(settings.input_path(settings.dispatch))
    except ConfigError as exc:
        return [str(exc)]
    from sensord.dispatch._build import builtin_receivers, check_channels  # noqa: PLC0415

    rules = load_rule_files(rule_files(settings.input_path(settings.rules_dir)), registry)
    router = Router(loaded.spec, builtin=builtin_receivers(settings))
    return check_dispatch(loaded, router, rules, registry) + check_channels(loaded, settings)


async def _run_daemon(settings: Settings) -> None:
    from sensord._state_lock import StateLock  # noqa: PLC0415

    # One process per state_dir: a second instance given the same one is refused.
    lock = StateLock(settings.state_dir).acquire()
    try:
        await _serve(settings)
    finally:
        lock.release()


async def _serve(settings: Settings) -> None:
    from sensord._app import build_daemon  # noqa: PLC0415 - keeps `sensord --version` fast
    from sensord._daemon import run_until_cancelled  # noqa: PLC0415

    daemon, http = await build_daemon(settings)
    # (Daemon.run moves what start-up built out of the collector's sight: gc.freeze.)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    # SIGHUP (systemctl reload sensord): reload the rule files between batches.
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    try:
        await run_until_cancelled(daemon)
    except asyncio.CancelledError:
        log.info("sensord stopped")
    finally:
        if http is not None:
            await http.aclose()


def _run(config: Path) -> int:
    configure_logging(LogSettings())
    try:
        settings = load_settings(config)
        configure_logging(settings.log)
        asyncio.run(_run_daemon(settings))
    except (ConfigError, RuleError) as exc:
        log.critical("cannot start: %s", exc)
        print(f"sensord: cannot start: {exc}", file=sys.stderr)
        return 2
    except SensordError as exc:
        log.critical("stopped: %s", exc)
        return 1
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from sensord.simulate import main as simulate_main  # noqa: PLC0415

    return simulate_main(args)


def _rules(args: argparse.Namespace) -> int:
    from sensord import _tools  # noqa: PLC0415 - numpy-heavy; only when needed

    if args.rules_command == "check":
        return _tools.rules_check(args.files, args.config)
    return _tools.rules_test(args.files)


def _replay(args: argparse.Namespace) -> int:
    from sensord import _tools  # noqa: PLC0415

    return _tools.replay_command(args)


def _live(args: argparse.Namespace) -> int:
    from sensord import _tools  # noqa: PLC0415

    return _tools.record_command(args) if args.command == "record" else _tools.play_command(args)


def _new_secret() -> int:
    """A Standard Webhooks secret: give the same text to sensord and the receiver."""
    print(WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def _deadletter(args: argparse.Namespace) -> int:
    from sensord import _ops  # noqa: PLC0415 - only when needed

    return _ops.deadletter_export(args)


def _routes(args: argparse.Namespace) -> int:
    from sensord._routes import routes_test  # noqa: PLC0415 - only when needed

    return routes_test(args)


def _silence(args: argparse.Namespace) -> int:
    from sensord._silence_cli import silence_command  # noqa: PLC0415 - only when needed

    return silence_command(args)


def _kpi(args: argparse.Namespace) -> int:
    from sensord._kpi_cli import kpi_command  # noqa: PLC0415 - only when needed

    return kpi_command(args)


def _audit(args: argparse.Namespace) -> int:
    from sensord._audit_cli import audit_command  # noqa: PLC0415 - only when needed

    return audit_command(args)


def _shard(args: argparse.Namespace) -> int:
    from sensord._shard_cli import shard_command  # noqa: PLC0415 - only when needed

    return shard_command(args)


def _outbox(args: argparse.Namespace) -> int:
    from sensord import _ops  # noqa: PLC0415 - opens SQLite and metrics; only when needed

    return _ops.outbox_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"check": lambda: _check(args.config), "run": lambda: _run(args.config)}
    commands |= {"rules": lambda: _rules(args), "replay": lambda: _replay(args)}
    commands |= {"record": lambda: _live(args), "play": lambda: _live(args)}
    commands |= {"outbox": lambda: _outbox(args), "deadletter": lambda: _deadletter(args)}
    commands |= {"secret": _new_secret, "routes": lambda: _routes(args), "silence": lambda: _silence(args)}
    commands |= {"kpi": lambda: _kpi(args), "audit": lambda: _audit(args), "shard": lambda: _shard(args)}
    return commands.get(args.command, lambda: _simulate(args))()


if __name__ == "__main__":
    raise SystemExit(main())
