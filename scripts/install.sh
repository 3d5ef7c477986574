#!/usr/bin/env bash
# Installs sensord as a systemd service on a Debian 12 edge box, from a clone of this
# repository (run as root):
#
#   /opt/sensord/venv            the package, in its own virtualenv
#   /etc/sensord/                sensord.yaml, devices.yaml, dispatch.yaml and rules/ (the shipped samples)
#   /etc/sensord/secrets/        root only; webhook-secret, made here if there is none
#   /etc/systemd/system/         sensord.service
#
# then checks the installed config as the service will read it. Safe to run again, for
# an upgrade: the package and the unit are replaced, while the config, the registry,
# the rules and the secrets that are already there are kept as the operator left them
# (local changes to the unit belong in a drop-in: `systemctl edit sensord`).
#
#   bash scripts/install.sh [--root DIR] [--no-package]
#
# --root DIR    install under DIR instead of / (a test, or an image being built); nothing
#               outside DIR is changed and systemd is not told
# --no-package  keep the sensord already in DIR/opt/sensord/venv (change only the files)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"

root=""
package=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$(realpath -m "$2")"; shift 2 ;;
    --no-package) package=no; shift ;;
    *) echo "usage: $0 [--root DIR] [--no-package]" >&2; exit 2 ;;
  esac
done
[ "$root" = "/" ] && root=""

venv="$root/opt/sensord/venv"
sensord="$venv/bin/sensord"
etc="$root/etc/sensord"
units="$root/etc/systemd/system"
say() { echo "install: $*"; }

# The package. Debian's python3 makes a virtualenv only with python3-venv installed.
if [ "$package" = yes ]; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ -n "$root" ]; then
      echo "install: python3 cannot make a virtualenv; apt-get install python3-venv" >&2
      exit 1
    fi
    say "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  # The MQTT scanner (src/sensord/ingest/_scan.c) is compiled at install; without gcc and
  # Python's headers sensord installs anyway and runs its slower pure-Python parser.
  if [ -z "$root" ] && ! { command -v gcc >/dev/null && python3 -c 'import os, sysconfig
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; }; then
    say "installing gcc and python3-dev (to build the MQTT scanner)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev || \
      say "could not install them: sensord will run its pure-Python MQTT parser"
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "$src"
  say "package: $("$sensord" --version) in $venv"
fi
[ -x "$sensord" ] || { echo "install: no $sensord (run without --no-package)" >&2; exit 1; }

# Config, registry and rules, readable by the service's transient user. The sample
# config reads the registry and rules relative to its own folder: /etc/sensord/devices.yaml
# and /etc/sensord/rules/.
install -d -m 0755 "$etc"
for f in sensord.yaml devices.yaml dispatch.yaml; do
  if [ -e "$etc/$f" ]; then
    say "kept $etc/$f"
  else
    install -m 0644 "$src/config/$f" "$etc/$f"
  fi
done
if [ -e "$etc/rules" ]; then
  say "kept $etc/rules (this release's rules are in $src/rules)"
else
  cp -R "$src/rules" "$etc/rules"
  chmod -R u=rwX,go=rX "$etc/rules"
fi

# Secrets: read only by systemd (LoadCredential=), which hands the service a private
# copy; the service's user never reads this folder.
install -d -m 0700 "$etc/secrets"
if [ ! -s "$etc/secrets/webhook-secret" ]; then
  (umask 077 && "$sensord" secret new > "$etc/secrets/webhook-secret.new")
  mv "$etc/secrets/webhook-secret.new" "$etc/secrets/webhook-secret"
  say "made a webhook signing secret in $etc/secrets/webhook-secret; give the dispatch side the same text"
fi

# The unit is ours and replaced on every run; it loads exactly the credentials made above.
install -d -m 0755 "$units"
install -m 0644 "$src/systemd/sensord.service" "$units/sensord.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

if [ -z "$root" ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  say "no Mosquitto on this box: apt-get install mosquitto, or point broker.host at yours"
fi

# The check sees the secrets as the service will: each credential is the file of the same
# name in secrets/ (see LoadCredential= in the unit).
CREDENTIALS_DIRECTORY="$etc/secrets" "$sensord" check -c "$etc/sensord.yaml"
say "done; edit $etc/sensord.yaml for your broker and sinks, check it again, then: systemctl enable --now sensord"
