#!/usr/bin/env bash
# test-under-load.sh - run the suite on a machine kept busy by other work,
# as CI's shared machine may be, and report.
#
#   scripts/test-under-load.sh            two CPU hogs; ./build.sh test once,
#                                         then the TestCPU* twins 5 times
#   HOGS=4 TWIN_RUNS=10 scripts/test-under-load.sh
#   SKIP_SUITE=1 scripts/test-under-load.sh   the twins only
#
# The hogs are plain shell loops at normal priority, one per HOGS, started
# before the first run and killed on exit. Every wait in the tests is
# bounded by the absence of progress (watchdog_test.go), so a loaded
# machine makes the suite slower, never red; a hang still fails, with the
# watchdog's report of what moved and what was stuck. Logs go to
# build/under-load/ (LOGDIR overrides); the last lines printed are the
# summary. Exit status: 0 when every run passed. Not part of CI.
set -uo pipefail
cd "$(dirname "$0")/.."

hogs=${HOGS:-2}
runs=${TWIN_RUNS:-5}
logdir=${LOGDIR:-build/under-load}
twins='^TestCPU(Checksum|DeviceChecksum|PingPong|Warp2D|StopRestart|DoublePin|Launcher)$'
export PATH="$PATH:/usr/local/go/bin"
mkdir -p "$logdir"

pids=()
stop_hogs() {
	[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
	wait 2>/dev/null
}
trap stop_hogs EXIT
for _ in $(seq "$hogs"); do
	(while :; do :; done) &
	pids+=($!)
done
echo "test-under-load: $hogs CPU hogs running (pids ${pids[*]}) on $(nproc) CPUs"

summary=()
failed=0
# run NAME LOG CMD...: runs CMD, logs it, and notes PASS or FAIL with its
# time and the machine's load average at its end.
run() {
	local name=$1 log=$2
	shift 2
	local t0=$SECONDS
	"$@" >"$log" 2>&1
	local rc=$?
	local took=$((SECONDS - t0)) load
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	if [ $rc -eq 0 ]; then
		summary+=("PASS $name (${took} s, load average $load)")
	else
		summary+=("FAIL $name (exit $rc after ${took} s, load average $load; $log)")
		failed=$((failed + 1))
		grep -E -- '^(--- FAIL|FAIL|panic:)|no progress' "$log" | head -20 | sed 's/^/    /'
	fi
	echo "test-under-load: ${summary[-1]}"
}

if [ -z "${SKIP_SUITE:-}" ]; then
	run "./build.sh test" "$logdir/build-test.log" ./build.sh test
fi
[ -n "${MEGAIO_NO_CUDA_TOOLKIT:-}" ] || export MEGAIO_REQUIRE_CPU_KERNELS=1
for i in $(seq "$runs"); do
	run "TestCPU* twins with -race, run $i of $runs" "$logdir/twins-$i.log" \
		go test -timeout=45m -race -count=1 -v -run "$twins" .
	grep -h 'kernels_test.go.*stops,' "$logdir/twins-$i.log" | sed 's/^ */    /'
done

echo
echo "test-under-load: summary ($hogs CPU hogs, $(nproc) CPUs)"
printf '  %s\n' "${summary[@]}"
passed=$((${#summary[@]} - failed))
echo "test-under-load: $passed of ${#summary[@]} passed"
[ $failed -eq 0 ]
