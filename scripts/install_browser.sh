#!/usr/bin/env bash
# Installs Debian's chromium and chromedriver for the dashboard's browser tests (tests/e2e).
# Needs root; does nothing when both are already there. Nothing is downloaded at test time.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "chromium and chromedriver are already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_browser.sh needs root (apt-get install chromium chromium-driver)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium chromium-driver
