#!/usr/bin/env bash
# Installs the pinned official E2B SDK (test/e2b/package-lock.json) that
# the sandbox API end-to-end test (test/e2e/sandbox_test.go) drives.
set -euo pipefail
cd "$(dirname "$0")/../test/e2b"
if ! command -v npm >/dev/null; then
  apt-get install -y -q --no-install-recommends nodejs npm
fi
# e2b@2 declares node ">=20.18.1 <21 || >=22"; say so rather than fail later.
node -e '
const [a, b] = process.versions.node.split(".").map(Number);
if (a < 20 || (a === 20 && b < 18)) {
  console.error(`install-e2b: the e2b SDK needs Node.js >= 20.18 (this is ${process.version})`);
  process.exit(1);
}'
npm ci --no-audit --no-fund
