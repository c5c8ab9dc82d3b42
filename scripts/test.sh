#!/usr/bin/env bash
# scripts/test.sh: run every unit test binary (build/asan/test_*), then the
# integration tests (test/integ/run.py), and end with one combined line
# "N passed, N failed". Exits non-zero on any failure. `make test` builds
# first; run from anywhere.
#
#   UNIT_TIMEOUT   seconds per unit binary (default 300)
#   INTEG_TIMEOUT  seconds for the whole integration run (default 1500)
#   NATWRP_BIN     binary for the integration tests (default build/asan/natwrp)
#   INTEG_ARGS     extra arguments for run.py, e.g. "-k http"
set -uo pipefail

cd "$(dirname "$0")/.."
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
INTEG_TIMEOUT=${INTEG_TIMEOUT:-1500}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
log_dir=build/test-logs
mkdir -p "$log_dir"

# Add the "N passed, N failed" totals found in file $1 to the sums. A run
# that ended without such a line (crash, timeout) counts as one failure.
tally() {
    local line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1))
        return 1
    fi
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed}
    passed=$((passed + p))
    failed=$((failed + f))
    return 0
}

echo "== unit tests"
shopt -s nullglob
units=(build/asan/test_*)
if [ ${#units[@]} -eq 0 ]; then
    echo "FAIL no unit test binaries in build/asan (run: make asan unit)"
    failed=$((failed + 1))
fi
for bin in "${units[@]}"; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=$(basename "$bin")
    out="$log_dir/$name.out"
    timeout --kill-after=10 "$UNIT_TIMEOUT" "$bin" >"$out" 2>&1
    rc=$?
    cat "$out"
    if ! tally "$out"; then
        echo "FAIL $name: no summary line (exit status $rc)"
    elif [ $rc -ne 0 ] && ! grep -qE '^[0-9]+ passed, [1-9][0-9]* failed$' "$out"; then
        # Summary said 0 failed but the binary still failed (e.g. a leak
        # report at exit): count it.
        echo "FAIL $name: exit status $rc"
        failed=$((failed + 1))
    fi
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$out"; then
        echo "FAIL $name: sanitizer report (see $out)"
        failed=$((failed + 1))
    fi
done

echo "== integration tests"
out="$log_dir/integ.out"
# shellcheck disable=SC2086
timeout --kill-after=30 "$INTEG_TIMEOUT" python3 test/integ/run.py ${INTEG_ARGS:-} 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if ! tally "$out"; then
    echo "FAIL integration run: no summary line (exit status $rc)"
elif [ "$rc" -ne 0 ] && ! grep -qE '^[0-9]+ passed, [1-9][0-9]* failed$' "$out"; then
    echo "FAIL integration run: exit status $rc"
    failed=$((failed + 1))
fi

echo "== total"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
