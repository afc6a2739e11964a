#!/usr/bin/env bash
# gpu-run.sh - copied into the GPU bundle as run.sh by scripts/gpu-check.sh.
# Runs on the GPU machine, from the bundle's directory, with no Go and no
# network: finds nvcc and cuFile wherever they are (src/scripts/cuda-env.sh),
# runs every part and writes one summary, summary.txt, with a PASS or FAIL
# line per part. A part that cannot run is a FAIL that says why, never
# silence. Logs (8 files at most) go to $OUT, else ./logs.
#
#   parts: cuda-checks (declarations, kernels for this GPU, scope check),
#          cufile (found, and whether GDS or compatibility mode),
#          gpu-tests (TestGPU*: the persistent kernels, through the same
#          test bodies as their TestCPU* twins on CPU threads), device-gds and
#          examples (each program under examples/, its kernel built with
#          nvcc for this GPU), device-gds and
#          device-bounce (TestDevice* on the real driver with and without
#          cuFile), bench (BenchmarkDevice), all-tests (the whole suite,
#          the TestCPU* twins included where g++ is installed)
set -uo pipefail
cd "$(dirname "$0")"
logs="${OUT:-$PWD/logs}"
mkdir -p "$logs" build
summary="$logs/summary.txt"
: >"$summary"
status=0
part() { # part NAME PASS|FAIL DETAIL
	echo "$2 $1: $3" | tee -a "$summary"
	[ "$2" = PASS ] || status=1
}
# shellcheck source=cuda-env.sh
. src/scripts/cuda-env.sh

nvcc="$(megaio_find_nvcc)"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d .)
{
	date -u +"date: %FT%TZ"
	nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
	nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/driver CUDA version: \1/p'
	echo "nvcc: ${nvcc:-not found} $([ -n "$nvcc" ] && "$nvcc" --version | tail -n1)"
	echo "kernel: $(uname -r)"
	echo "glibc: $(ldd --version 2>&1 | head -n1)"
	ls /dev/nvidia-fs* 2>/dev/null | head -n3 | sed 's/^/nvidia-fs: /' || true
	[ -e /dev/nvidia-fs0 ] || echo "nvidia-fs: absent (cuFile can only run in compatibility mode)"
} >"$logs/machine.txt" 2>&1

# cuda-checks: this GPU's architecture (and sm_90) is enough here; CI
# compiles every architecture.
if [ -z "$nvcc" ]; then
	part cuda-checks FAIL "no nvcc (looked in \$NVCC, \$CUDA_HOME/bin, PATH, /usr/local/cuda/bin): kernels not built, GPU tests cannot run"
else
	archs="${arch:-90}"
	[ "$archs" = 90 ] || archs="$archs 90"
	if MEGAIO_CUDA_ARCHS="$archs" SCOPECHECK="$PWD/scopecheck" src/scripts/cuda-checks.sh src build >"$logs/cuda-checks.txt" 2>&1; then
		part cuda-checks PASS "$(grep -c '^cuda-checks: PASS' "$logs/cuda-checks.txt") checks for sm_$archs ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/CUDA \1/p'))"
	else
		part cuda-checks FAIL "$(grep '^cuda-checks: FAIL' "$logs/cuda-checks.txt" | head -n3 | tr '\n' ';')"
	fi
fi

# cufile: the library the device tests load.
read -r cufile_inc cufile_lib < <(megaio_find_cufile) || true
if [ -n "${cufile_lib:-}" ]; then
	export LD_LIBRARY_PATH="$cufile_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	mode="compatibility mode (no /dev/nvidia-fs*)"
	[ -e /dev/nvidia-fs0 ] && mode="GDS (nvidia-fs present)"
	part cufile PASS "libcufile.so.0 in $cufile_lib, cufile.h in $cufile_inc; $mode"
else
	part cufile FAIL "no cuFile found (toolkit, Debian, nvidia/cu13 or nvidia/cufile wheel): GDS NOT COVERED, the device tests run the bounce path only"
fi

# skip_reason LOG: the first two skip messages in a verbose test log (go
# test prints a skip's message on the line before "--- SKIP").
skip_reason() {
	grep -B1 -- '--- SKIP' "$1" | grep -v -e '--- SKIP' -e '^--$' | head -n2 | tr -s ' ' | tr '\n' ';'
}

# run_tests NAME LOG ARGS...: runs the test binary; FAIL on a failure, and
# on any skip (this machine has the GPU the tests wait for).
run_tests() {
	local name="$1" log="$2"
	shift 2
	if ! "$@" >"$log" 2>&1; then
		part "$name" FAIL "$(grep -E -- '^\s*--- FAIL' "$log" | head -n3 | tr -s ' ' | tr '\n' ';') see $(basename "$log")"
	elif grep -q -- '--- SKIP' "$log"; then
		part "$name" FAIL "skipped on a GPU machine: $(skip_reason "$log")"
	else
		part "$name" PASS "$(grep -c -- '^\s*--- PASS' "$log") passed"
	fi
}

kernels="$PWD/build/megakernel.fatbin"
if [ -f "$kernels" ]; then
	run_tests gpu-tests "$logs/gpu-tests.txt" env MEGAIO_GPU_KERNELS="$kernels" \
		./megaio.test -test.run '^TestGPU' -test.v -test.count=1 -test.timeout 8m
else
	part gpu-tests FAIL "build/megakernel.fatbin was not built (see cuda-checks)"
fi
# The examples, as a user runs them: each builds its kernel for this GPU
# with nvcc (-arch=native) and verifies what it did. Their output follows
# the GPU tests' in gpu-tests.txt (the logs stay at 8 files).
if [ -z "$nvcc" ]; then
	part examples FAIL "no nvcc: the examples cannot build their kernels"
else
	{ echo; echo "==== examples (-target gpu) ===="; } >>"$logs/gpu-tests.txt"
	passed=0 failed=""
	for ex in "checksum" "checksum -device" "checkpoint" "warpread"; do
		echo "---- examples/$ex" >>"$logs/gpu-tests.txt"
		# shellcheck disable=SC2086 # $ex is a program and its flags
		if MEGAIO_NVCC="$nvcc" ./examples/$ex -target gpu >>"$logs/gpu-tests.txt" 2>&1; then
			passed=$((passed + 1))
		else
			failed="$failed$ex; "
		fi
	done
	if [ -z "$failed" ]; then
		part examples PASS "$passed examples verified on the GPU (see gpu-tests.txt)"
	else
		part examples FAIL "failed: $failed see gpu-tests.txt"
	fi
fi
# The device paths on the real driver: with cuFile (GDS or its
# compatibility mode), then without it (the bounce path).
# The fault-injection tests need the stand-ins; all-tests runs them.
stand_in_only='^(TestDeviceFakeDriver|TestDeviceCopyFailure|TestDeviceGDSFaults|TestDeviceGDSRetryLimit|TestDeviceGDSSilentCancel|TestDeviceLaunchStream)$'
run_tests device-gds "$logs/device-gds.txt" ./megaio.test -test.run '^TestDevice' -test.skip "$stand_in_only" \
	-test.v -test.count=1 -test.timeout 8m
run_tests device-bounce "$logs/device-bounce.txt" env MEGAIO_TEST_FAKE_CUFILE=absent \
	./megaio.test -test.run '^TestDevice' -test.skip "$stand_in_only" -test.v -test.count=1 -test.timeout 8m
if ! ./megaio.test -test.run '^$' -test.bench 'BenchmarkDevice' -test.benchtime 2s -test.count 3 -test.v \
	>"$logs/bench.txt" 2>&1; then
	part bench FAIL "see bench.txt"
elif grep -q -- '--- SKIP' "$logs/bench.txt" || ! grep -q 'MB/s' "$logs/bench.txt"; then
	part bench FAIL "a benchmark skipped or gave no figure: $(skip_reason "$logs/bench.txt")"
else
	part bench PASS "$(grep -c 'MB/s' "$logs/bench.txt") figures"
fi
# The rest of the suite, on this machine too (io_uring, FUSE, the pool).
if ./megaio.test -test.count=1 -test.timeout 8m >"$logs/all-tests.txt" 2>&1; then
	part all-tests PASS "$(tail -n1 "$logs/all-tests.txt")"
else
	part all-tests FAIL "$(grep -E -- '^--- FAIL' "$logs/all-tests.txt" | head -n3 | tr '\n' ';')"
fi
cat "$summary"
exit $status
