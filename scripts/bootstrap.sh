#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for sensord: the Debian packages it talks to in the
# demo and the tests (Mosquitto, InfluxDB 1.x, VictoriaMetrics, nats-server, RabbitMQ)
# and a virtualenv with sensord installed. Safe to run again: it skips what is already
# there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v influxd >/dev/null || need+=(influxdb)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
# The MQTT client's conformance suite runs against nats-server's MQTT listener too, and
# makes TLS certificates with openssl, as does the test SMTP server (sensord.testing).
# Python packages, the test ones included (aiosmtpd, standardwebhooks), come from
# pyproject.toml's `dev` extra below.
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# ... and against RabbitMQ's MQTT plugin: the tests start a private node of their own
# (sensord.testing.RabbitMqServer), never the package's service.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v openssl >/dev/null || need+=(openssl)
# The operator console's browser test drives Debian's chromium with Playwright (never a
# browser build of Playwright's own, which cannot be downloaded here).
[ -x /usr/bin/chromium ] || need+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv python3-pip)
# The MQTT scanner (src/sensord/ingest/_scan.c) is compiled at install: a C compiler and
# Python's headers. Without them sensord still installs and runs its pure-Python parser.
command -v gcc >/dev/null || need+=(gcc)
python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The packages' own services are not wanted: the demo and tests start private
  # instances on free ports. policy-rc.d keeps the post-install scripts from starting them.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q -e '.[dev]'
echo "bootstrap: ready ($(.venv/bin/sensord --version))"
