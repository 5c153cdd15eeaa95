#!/usr/bin/env bash
# Makes sure the mosquitto broker binary is installed; the tests start private instances of it
# on free loopback ports. Installs Debian's mosquitto and mosquitto-clients when missing.
# Starts nothing itself; if the package's own scripts start the system service, that stays.
set -euo pipefail

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto
}

if have_mosquitto; then
    exit 0
fi

echo "ensure-mosquitto: mosquitto is not installed; installing Debian's mosquitto, mosquitto-clients" >&2

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-mosquitto: no apt-get here. Install mosquitto with your package manager," \
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
         "'apt-get install mosquitto mosquitto-clients', then try again." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=120 -q)
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
    --no-install-recommends mosquitto mosquitto-clients

if ! have_mosquitto; then
    echo "ensure-mosquitto: apt-get finished but no mosquitto binary is there" >&2
    exit 1
fi
echo "ensure-mosquitto: installed $(command -v mosquitto || echo /usr/sbin/mosquitto)" >&2
