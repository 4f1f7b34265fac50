#!/usr/bin/env bash
# Builds Basalt's native addon (native/*.c) with AddressSanitizer and with
# ThreadSanitizer, each in its own scratch folder (the normal build in build/
# is left alone), and runs the tests that drive the native data plane and the
# file driver's system calls against each build (issue 13, "Sanitizers").
#
#   bash scripts/sanitize-native.sh [asan|tsan|all] [test files…]
#
# Node itself is not instrumented, so the sanitizer's runtime is preloaded
# (LD_PRELOAD) and each test file runs in one process (`node file.test.ts`,
# not `node --test`, which would fork). Leak detection is off: Node keeps
# memory until exit by design. ThreadSanitizer also reports races inside
# Node and V8, whose atomics it cannot see; only reports with a frame in the
# addon's sources count, the others are tallied and ignored. Reports go to
# $out (printed), and the script exits 1 when any counts or a test fails.
# Under ThreadSanitizer the memory-bound tests' RSS checks may fail: its
# shadow memory grows RSS several times over what the buffers take (their
# buffer checks still hold).
#
# Not part of `npm test`: a run takes a few minutes on two cores.
set -uo pipefail
cd "$(dirname "$0")/.."

mode="${1:-all}"
shift || true
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(test/unit/drivers/file/native-io.test.ts test/export/nbd-seek-errors.test.ts test/export/nbd-server.test.ts
    test/export/nbd-fence.test.ts test/export/nbd-enospc.test.ts test/export/nbd-bounds.test.ts test/fuzz/nbd-fuzz.test.ts)
fi
gyp="$(dirname "$(readlink -f "$(command -v node)")")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
out="${SANITIZE_OUT:-$(mktemp -d /tmp/basalt-sanitize-XXXXXX)}"
mkdir -p "$out"
status=0

build() { # name cflags
  local dir="$out/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r native binding.gyp "$dir/"
  echo '{"name":"basalt-sanitized","private":true}' > "$dir/package.json"
  (cd "$dir" && CFLAGS="$2 -g -O1 -fno-omit-frame-pointer" LDFLAGS="$2" node "$gyp" rebuild --nodedir="$nodedir" > build.log 2>&1) \
    || { echo "build with $2 failed: $dir/build.log"; return 1; }
  echo "$dir/build/Release/basalt_io.node"
}

# Loaded first into each test process: the NBD clients the tests start
# (qemu-io, nbdcopy, nbdinfo) must not inherit the sanitizer (qemu's
# coroutines hang under a preloaded ASan).
cat > "$out/unpreload.mjs" <<'JS'
delete process.env.LD_PRELOAD;
JS

run_tests() { # name addon preload options-var options
  local name=$1 addon=$2 preload=$3 var=$4 opts=$5 logs="$out/$1-reports"
  mkdir -p "$logs"
  for f in "${tests[@]}"; do
    echo "== $name: $f"
    env LD_PRELOAD="$preload" "$var=$opts:log_path=$logs/report" BASALT_ADDON_PATH="$addon" \
      node --import "$out/unpreload.mjs" --import tsx "$f" > "$out/$name-$(basename "$f").log" 2>&1
    local rc=$?
    grep -E '^# (pass|fail)' "$out/$name-$(basename "$f").log" | tr '\n' ' '
    echo "(exit $rc)"
    [ $rc -eq 0 ] || status=1
  done
  local ours=0 theirs=0
  for r in "$logs"/report.*; do
    [ -e "$r" ] || continue
    # One file per process; reports are separated by lines of '='.
    while IFS= read -r -d $'\x1e' report; do
      [ -n "${report//[[:space:]=]/}" ] || continue
      if grep -qE 'nbd_dataplane\.c|nbd_mirror\.c|basalt_io\.c' <<<"$report"; then
        ours=$((ours + 1))
        echo "$report"
      else
        theirs=$((theirs + 1))
      fi
    done < <(awk 'BEGIN{RS="==================\n"; ORS="\x1e"} {print}' "$r")
  done
  echo "$name: $ours report(s) in the addon, $theirs in Node/V8 or the tools the tests start (ignored)"
  [ $ours -eq 0 ] || status=1
}

if [ "$mode" = asan ] || [ "$mode" = all ]; then
  addon=$(build asan -fsanitize=address) || exit 1
  run_tests asan "$addon" "$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS "detect_leaks=0:verify_asan_link_order=0:quarantine_size_mb=32"
fi
if [ "$mode" = tsan ] || [ "$mode" = all ]; then
  addon=$(build tsan -fsanitize=thread) || exit 1
  run_tests tsan "$addon" "$(gcc -print-file-name=libtsan.so)" TSAN_OPTIONS "report_signal_unsafe=0:history_size=4:exitcode=0"
fi
echo "logs and reports: $out"
exit $status
