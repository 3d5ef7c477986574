"""The Node-RED peer of the drain benchmark: Node-RED 4 from npm, headless, with the flow
mqtt in → json → one function node (five of sensord's thresholds) → a counter.

Node-RED is installed on first use into bench/.node-red/ (ignored by git) with npm; the
folder is a cache, delete it to reinstall. The counter keeps the times of the first and
the last message it saw (ms, Date.now()) in flow context; an http-in endpoint hands them
out, so the benchmark polls twice a second rather than the flow writing files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from _alertshare import NODE_RED_RULES, NODE_RED_RULES_START
from _backlog import TOPIC
from sensord.testing import free_port

VERSION = "4.1.8"  # Node-RED 4, pinned so runs compare
CACHE = Path(__file__).resolve().parent / ".node-red"
MIN_NODE = 18  # Node-RED 4 needs Node.js 18 or later


class NodeRedUnavailableError(RuntimeError):
    """Node-RED cannot run here; the message says why."""


@dataclass(frozen=True)
class NodeRedDrain:
    seconds: float  # first message received to last one counted
    count: int
    flips: int  # alert states the function node changed
    startup_s: float  # process start to first message


def install(cache: Path = CACHE) -> Path:
    """Node-RED's red.js, installing it with npm into `cache` the first time."""
    red = cache / "node_modules" / "node-red" / "red.js"
    if red.exists():
        return red
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeRedUnavailableError("node or npm is not on PATH (Node-RED 4 needs Node.js >= 18 and npm)")
    major = int(
        subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
        .stdout[1:]
        .split(".")[0]
    )
    if major < MIN_NODE:
        raise NodeRedUnavailableError(f"Node.js {major} is too old: Node-RED 4 needs >= {MIN_NODE}")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing node-red@{VERSION} into {cache} (first run only) ...", flush=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(cache),
            "--no-audit",
            "--no-fund",
            "--omit=dev",
            f"node-red@{VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not red.exists():
        raise NodeRedUnavailableError(f"npm install node-red@{VERSION} failed: {done.stderr.strip()[-500:]}")
    return red


def _flow(port: int, client_id: str, qos: int) -> list[dict[str, object]]:
    tab = "bench"
    wire = {"z": tab, "x": 0, "y": 0}
    return [
        {"id": tab, "type": "tab", "label": "drain"},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "broker": "127.0.0.1",
            "port": str(port),
            "clientid": client_id,
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",
            "keepalive": "60",
            "cleansession": False,  # a persistent session: drain what the broker queued for it
            "autoUnsubscribe": False,
        },
        {
            "id": "in",
            "type": "mqtt in",
            **wire,
            "topic": TOPIC,
            "qos": str(qos),
            "datatype": "utf8",
            "broker": "broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["json"]],
        },
        {"id": "json", "type": "json", **wire, "property": "payload", "action": "obj", "wires": [["rules"]]},
        {
            "id": "rules",
            "type": "function",
            **wire,
            "name": "five thresholds",
            "func": NODE_RED_RULES,
            "initialize": NODE_RED_RULES_START,
            "outputs": 1,
            "wires": [["count"]],
        },
        {
            "id": "count",
            "type": "function",
            **wire,
            "name": "counter",
            "func": (
                "const s = flow.get('bench'), now = Date.now();\n"
                "if (s.n === 0) { s.first = now; }\n"
                "s.n += 1; s.flips += msg.flips; s.last = now;\n"
                "return null;\n"
            ),
            "initialize": "flow.set('bench', {n: 0, flips: 0, first: 0, last: 0});\n",
            "outputs": 1,
            "wires": [[]],
        },
        {"id": "get", "type": "http in", **wire, "url": "/bench", "method": "get", "wires": [["read"]]},
        {
            "id": "read",
            "type": "function",
            **wire,
            "func": "msg.payload = flow.get('bench');\nreturn msg;\n",
            "outputs": 1,
            "wires": [["answer"]],
        },
        {"id": "answer", "type": "http response", **wire, "statusCode": "200", "wires": []},
    ]


_SETTINGS = """module.exports = {{
  uiHost: "127.0.0.1",
  uiPort: {port},
  httpAdminRoot: false,  // no editor: the flow is the file
  credentialSecret: false,
  flowFilePretty: false,
  logging: {{ console: {{ level: "warn", metrics: false, audit: false }} }},
  telemetry: {{ enabled: false }},
  diagnostics: {{ enabled: false }},
  runtimeState: {{ enabled: false }},
  contextStorage: {{ default: {{ module: "memory" }} }},
}};
"""


def drain(
    red: Path, work: Path, session: tuple[int, str, int], n: int, timeout_s: float = 600
) -> NodeRedDrain:
    """Start Node-RED on the persistent session (broker port, client id, QoS) and wait
    until its counter has seen n messages."""
    port, client_id, qos = session
    user = work / f"node-red-{client_id}"
    user.mkdir(parents=True, exist_ok=True)
    http = free_port()
    (user / "settings.js").write_text(_SETTINGS.format(port=http), encoding="utf-8")
    (user / "flows.json").write_text(json.dumps(_flow(port, client_id, qos)), encoding="utf-8")
    log = (user / "node-red.log").open("w")
    node = shutil.which("node") or "node"
    started = time.time()
    proc = subprocess.Popen(
        [node, str(red), "-u", str(user), "-s", str(user / "settings.js"), "flows.json"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stats = _wait(proc, f"http://127.0.0.1:{http}/bench", n, started + timeout_s)
    except NodeRedUnavailableError as exc:
        log.flush()
        tail = (user / "node-red.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        raise NodeRedUnavailableError(f"{exc}; its log ends:\n{tail}") from None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return NodeRedDrain(
        seconds=(stats["last"] - stats["first"]) / 1000,
        count=stats["n"],
        flips=stats["flips"],
        startup_s=stats["first"] / 1000 - started,
    )


def _wait(proc: subprocess.Popen[bytes], url: str, n: int, deadline: float) -> dict[str, int]:
    while time.time() < deadline:
        if proc.poll() is not None:
            raise NodeRedUnavailableError(f"node-red exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                stats: dict[str, int] = json.loads(answer.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            stats = {"n": 0}
        if stats["n"] >= n:
            return stats
        time.sleep(0.5)
    raise NodeRedUnavailableError(f"node-red did not count {n} messages in time")
