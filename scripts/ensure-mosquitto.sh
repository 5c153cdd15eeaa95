#!/usr/bin/env bash
# Makes sure the mosquitto broker, its clients and jq are installed: `make run` / `make serve`
# start mosquitto as chargebus's embedded broker, the tests start private instances of it on
# free loopback ports, and docs/mqtt.md's recipes (run by the tests) use mosquitto_pub,
# mosquitto_sub and jq. Installs Debian's packages for what is missing.
# Starts nothing itself; if the package's own scripts start the system service, that stays.
set -euo pipefail

missing=()
if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto; then
    missing+=(mosquitto)
fi
if ! command -v mosquitto_sub >/dev/null 2>&1 || ! command -v mosquitto_pub >/dev/null 2>&1; then
    missing+=(mosquitto-clients)
fi
if ! command -v jq >/dev/null 2>&1; then
    missing+=(jq)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "ensure-mosquitto: not installed: ${missing[*]}; installing Debian's packages" >&2

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-mosquitto: no apt-get here. Install ${missing[*]} with your package manager," \
         "or set MQTT_URL=mqtt://127.0.0.1:PORT to a broker on loopback." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    # With no terminal (CI), sudo must not wait for a password that nobody types.
    if [ -t 0 ]; then as_root=(sudo); else as_root=(sudo -n); fi
else
    echo "ensure-mosquitto: not root and no sudo: run as root" \
         "'apt-get install ${missing[*]}', then try again." >&2
    exit 1
fi

apt_opts=(-o DPkg::Lock::Timeout=120 -q)
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
    --no-install-recommends "${missing[@]}"

if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto; then
    echo "ensure-mosquitto: apt-get finished but no mosquitto binary is there" >&2
    exit 1
fi
echo "ensure-mosquitto: installed ${missing[*]}" >&2
