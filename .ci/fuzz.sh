#!/usr/bin/env bash
# Short fuzzing pass for CI: every fuzz target of the module (every
# "func FuzzXxx" in a _test.go file) runs for FUZZTIME (default 4s), one
# after the other: 26 targets take about 3 minutes with their builds. The seed corpora already run in every `go test`; this
# explores beyond them. A failure leaves the failing input in the package's
# testdata/fuzz/FuzzXxx/ directory: commit it as a regression seed with the fix.
#
# Longer runs (>= 1M executions per target) are documented in README.md
# (Security section):  FUZZTIME=1000000x bash .ci/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

fuzztime="${FUZZTIME:-4s}"
start=$(date +%s)
n=0
# package directory and target name of every fuzz target, sorted.
targets=$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./examples/' | sort | while read -r f; do
  dir=$(dirname "$f")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r name; do echo "$dir $name"; done
done)
while read -r dir name; do
  [ -n "$dir" ] || continue
  echo "== fuzz $dir $name ($fuzztime)"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s "$dir"
  n=$((n + 1))
done <<< "$targets"
echo "== fuzzed $n targets in $(( $(date +%s) - start ))s"
