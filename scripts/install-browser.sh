#!/usr/bin/env bash
# Installs what the web page test needs: Debian's Chromium and the Playwright Python package.
# `playwright install` is deliberately not run: it downloads its own browsers, which offline
# machines cannot do; the test launches /usr/bin/chromium instead.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
python3 -m pip install -q playwright
