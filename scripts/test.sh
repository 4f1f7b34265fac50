#!/usr/bin/env bash
# The whole test suite: installs the Debian tools the tests drive (when missing),
# type-checks, then runs every test file through node:test with the TAP reporter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-tools.sh

echo "# typecheck"
npx tsc --noEmit -p .

# Node 20's runner does not find *.test.ts by itself: pass the files explicitly.
mapfile -t files < <(find test -name '*.test.ts' | sort)
# A hung test fails after 3 minutes instead of stalling the run.
exec node --import tsx --test --test-reporter=tap --test-concurrency=2 --test-timeout=180000 "${files[@]}"
