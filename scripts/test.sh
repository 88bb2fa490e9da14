#!/usr/bin/env bash
# Runs the whole test suite (unit, integration and end-to-end with real
# VMs under QEMU) and prints go test's summary. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
go vet ./... || exit 1
log=$(mktemp)
go test -p 2 -timeout 75m -count=1 ./... 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo
echo "== summary =="
ok=$(grep -c '^ok ' "$log"); fail=$(grep -c '^FAIL	' "$log")
echo "packages ok: $ok, failed: $fail, exit $rc"
exit "$rc"
