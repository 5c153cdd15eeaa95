#!/usr/bin/env bash
# Makes sure Debian's chromium is installed: the dashboard's browser tests (Playwright for
# Python) drive it headless through executable_path, as Playwright's own browser download
# cannot be used here (no network but the package registries). Installs it when missing,
# without the recommended packages (udev, avahi, printer tools: nothing a headless test needs)
# but with a font, so that pages render text. Starts nothing.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

echo "ensure-chromium: $CHROMIUM is not installed; installing Debian's chromium, fonts-liberation" >&2

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here. Install chromium with your package manager" \
         "(or set CHROMIUM=/path/to/chromium); the browser tests are skipped without it." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    # With no terminal (CI), sudo must not wait for a password that nobody types.
    if [ -t 0 ]; then as_root=(sudo); else as_root=(sudo -n); fi
else
    echo "ensure-chromium: not root and no sudo: run as root" \
         "'apt-get install --no-install-recommends chromium fonts-liberation', then try again." >&2
    exit 1
fi

apt_opts=(-o DPkg::Lock::Timeout=120 -q)
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
    --no-install-recommends chromium fonts-liberation

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium: apt-get finished but $CHROMIUM is not there" >&2
    exit 1
fi
echo "ensure-chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")" >&2
