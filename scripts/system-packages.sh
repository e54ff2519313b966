#!/usr/bin/env bash
# The Debian packages the test suite runs against (real brokers, databases and browsers, never
# mocks of them). Installs the missing ones when run as root; otherwise prints the one apt-get
# line to run and exits 1. `--check` only reports.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto || missing+=(mosquitto)
have mosquitto_sub || missing+=(mosquitto-clients)
have systemd-analyze || missing+=(systemd)
# the dashboard's browser tests drive Debian's headless Chromium (never a downloaded browser)
[ -x /usr/bin/chromium ] || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)
# the dashboard's queries are also checked on a throwaway PostgreSQL cluster
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "${1:-}" = "--check" ] || [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages for the tests; run: sudo apt-get update && sudo $line" >&2
    exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
