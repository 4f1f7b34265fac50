#!/usr/bin/env bash
# The whole test suite: installs the Debian tools the tests drive (when missing),
# type-checks, then runs every test file through node:test with the TAP reporter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-tools.sh
# The optional RBD addon, now that librbd-dev is there (npm ci may have run before it was).
node scripts/build-rbd-addon.mjs

echo "# typecheck"
npx tsc --noEmit -p .
# The web dashboard is its own TypeScript project (browser, JSX): dashboard/tsconfig.json.
npx tsc --noEmit -p dashboard

# Node 20's runner does not find *.test.ts by itself: pass the files explicitly. The Ceph files
# (test/conformance/rbd-driver*.test.ts, ceph-cluster.test.ts, test/functional/rbd-backend.test.ts)
# run in this first group, on the run's shared cluster (below).
mapfile -t files < <(find test -name '*.test.ts' ! -path 'test/tempest/*' ! -name 'rbd-mirror*.test.ts' | sort)
# The files that run a whole cluster under SIGKILLs keep a core busy for minutes each. Sorted, the
# three chaos files sat side by side: two 6-process clusters on 2 cores slowed each other past the
# 5 minutes per file (a CI run: 207 s and a timeout). The runner starts files in the order given,
# two at a time, so these go at even intervals through the list, each beside light files.
heavy=(test/postgres/chaos-etcd.test.ts test/conformance/rbd-driver-kills.test.ts test/postgres/chaos-file.test.ts test/postgres/chaos-rbd.test.ts)
for f in "${heavy[@]}"; do [ -f "$f" ] || { echo "scripts/test.sh: $f is gone: update the list of heavy files" >&2; exit 1; }; done
mapfile -t light < <(printf '%s\n' "${files[@]}" | grep -vxF -f <(printf '%s\n' "${heavy[@]}"))
files=()
step=$(( ${#light[@]} / ${#heavy[@]} ))
for i in "${!heavy[@]}"; do
  files+=("${heavy[$i]}" "${light[@]:$((i * step)):$step}")
done
files+=("${light[@]:$((${#heavy[@]} * step))}")
# The rbd-mirror files start a second cluster (the drill a third) and rbd-mirror daemons each:
# two of them side by side, beside the shared cluster, passed the 5 minutes per file on 2 cores
# (two CI runs, the drill). They run afterwards, one at a time, with the shared cluster still up.
mapfile -t mirror_files < <(find test -name 'rbd-mirror*.test.ts' | sort)
mapfile -t tempest_files < <(find test/tempest -name '*.test.ts' | sort)
# Each test file runs from a bundle of it made by esbuild (scripts/bundle.mjs), which loads in
# about half the CPU of the sources through tsx; through tsx when no bundle can be made.
runner=(node --enable-source-maps --test --test-reporter=tap)
list=$(mktemp)
if node scripts/bundle.mjs tests "${files[@]}" "${mirror_files[@]}" "${tempest_files[@]}" > "$list"; then
  mapfile -t bundled < "$list"
  files=("${bundled[@]:0:${#files[@]}}")
  mirror_files=("${bundled[@]:${#files[@]}:${#mirror_files[@]}}")
  tempest_files=("${bundled[@]:$((${#files[@]} + ${#mirror_files[@]}))}")
else
  echo "# the test files run through tsx: no bundle of them could be made"
  runner=(node --import tsx --test --test-reporter=tap)
fi
rm -f "$list"
# A hung test file fails after 5 minutes instead of stalling the run (the Keystone file takes
# about 100 s alone and can pass 180 s beside a busy neighbour on 2 cores).
run() { "${runner[@]}" "$@" | tee -a "$log"; return "${PIPESTATUS[0]}"; }
log=$(mktemp)
# One Ceph cluster for the whole run (test/helpers/ceph.ts): the files that need one attach to it
# with a pool each; its daemons are killed by pid when the run ends. If it cannot start, each
# such file starts its own (and reports why that fails).
ceph_dir=$(node --import tsx test/helpers/ceph-shared.ts start) || ceph_dir=
tempest_pid=
cleanup() {
  rm -f "$log" "${tempest_log:-}"
  if [ -n "$tempest_pid" ]; then kill "$tempest_pid" 2>/dev/null || true; fi
  if [ -n "$ceph_dir" ]; then node --import tsx test/helpers/ceph-shared.ts stop "$ceph_dir"; fi
}
trap cleanup EXIT
if [ -n "$ceph_dir" ]; then export TEST_CEPH_DIR="$ceph_dir"; fi
status=0
run --test-concurrency=2 --test-timeout=300000 "${files[@]}" || status=1
# Tempest's volume API tests (about 10 minutes, with their own bound) run beside the
# rbd-mirror files: each keeps about half of the machine busy (the mirror files wait on
# rbd-mirror's replays, tempest on its clients and Keystone), and the two together take
# hardly longer than tempest alone. Tempest's report follows the mirror files' in the log.
tempest_log=$(mktemp)
"${runner[@]}" --test-timeout=1800000 "${tempest_files[@]}" > "$tempest_log" 2>&1 &
tempest_pid=$!
run --test-concurrency=1 --test-timeout=300000 "${mirror_files[@]}" || status=1
# Tempest needs no Ceph: stop the shared cluster now rather than idle beside it.
if [ -n "$ceph_dir" ]; then node --import tsx test/helpers/ceph-shared.ts stop "$ceph_dir"; ceph_dir=; fi
wait "$tempest_pid" || status=1
tee -a "$log" < "$tempest_log"
rm -f "$tempest_log"
# One closing line for both runs.
passed=$(grep -E '^# pass [0-9]+$' "$log" | awk '{s += $3} END {print s + 0}')
failed=$(grep -E '^# fail [0-9]+$' "$log" | awk '{s += $3} END {print s + 0}')
# A file that failed as a whole (its timeout, a crash before its tests reported) is not in the
# `# fail` lines: count it too, so that the summary agrees with the exit status.
files_failed=$(grep -cE '^not ok [0-9]+ - .*\.test\.m?[jt]s$' "$log" || true)
failed=$((failed + files_failed))
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
