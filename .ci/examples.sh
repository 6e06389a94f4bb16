#!/usr/bin/env bash
# Builds every runnable example (the main module's and the examples/sdks
# module's), vets the sdks module, and runs each example to completion,
# offline (EZTHROTTLE_API_KEY unset), with a timeout. Exits non-zero on the
# first failure. Usage: bash .ci/examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
unset EZTHROTTLE_API_KEY EZTHROTTLE_PROXY_URL EZTHROTTLE_URL EZTHROTTLE_USER_ID EZTHROTTLE_WEBHOOK_SECRET
timeout_s="${EXAMPLE_TIMEOUT:-60}"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT

run_module() { # $1: module dir, $2: package pattern
  local dir="$1" pattern="$2"
  (
    cd "$dir"
    echo "== examples: go vet ($dir)"
    go vet $pattern
    for pkg in $(go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' $pattern); do
      name="$(echo "$pkg" | tr '/.' '__')"
      echo "== examples: build $pkg"
      go build -o "$bin/$name" "$pkg"
      echo "== examples: run $pkg (timeout ${timeout_s}s)"
      start=$(date +%s)
      if ! timeout "$timeout_s" "$bin/$name" >"$bin/$name.out" 2>&1; then
        echo "FAILED: $pkg"; cat "$bin/$name.out"; exit 1
      fi
      echo "   ok in $(( $(date +%s) - start ))s, $(wc -l <"$bin/$name.out") lines of output"
    done
  )
}

# EXAMPLES_PATTERN narrows the main-module examples (e.g. for a local run).
run_module . "${EXAMPLES_PATTERN:-./examples/...}"
run_module examples/sdks ./...
echo "== examples: all passed"
