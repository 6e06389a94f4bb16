#!/usr/bin/env bash
# Installs Debian's chromium package if no Chromium/Chrome is installed, for
# the browser tests of e2e/browser (run by .ci/browser.sh). Checks that it
# starts headless.
set -euo pipefail
have() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || command -v google-chrome >/dev/null 2>&1 || [ -n "${EZTHROTTLE_CHROME:-}" ]; }
if ! have; then
  echo "installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
bin="${EZTHROTTLE_CHROME:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}"
if ! timeout 60 "$bin" --headless --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>ok</p>' 2>/dev/null | grep -q '<p>ok</p>'; then
  echo "chromium ($bin) does not start headless" >&2
  exit 1
fi
echo "chromium ready: $("$bin" --version 2>/dev/null | head -1)"
