#!/usr/bin/env bash
# Runs the dashboard tests in a real Chromium (the e2e/browser module, which
# keeps chromedp out of the root go.mod). With CI set they fail when no
# browser is installed instead of skipping; .ci/services.d/chromium.sh
# installs one. Screenshots go to $EZTHROTTLE_SCREENSHOTS_DIR (default: a
# temporary directory, logged by the tests).
# Usage: bash .ci/browser.sh
set -euo pipefail
cd "$(dirname "$0")/../e2e/browser"
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
export CI="${CI:-true}"
echo "== browser tests: go vet, staticcheck (e2e/browser)"
go vet ./...
if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; fi
echo "== browser tests: go test (e2e/browser, real Chromium)"
go test -race -count=1 -timeout 5m -v ./...
