#!/usr/bin/env bash
# build.sh - set up a fresh Debian/Ubuntu machine for megaio, build it, and
# run the demo or the tests.
#
#   ./build.sh          install what is missing, build bin/megaio and the
#                       examples (bin/example-*)
#   ./build.sh demo     ... then run the demo: a persistent kernel reading a
#                       file through the loop (examples/checksum), then host
#                       producers (every byte verified)
#   ./build.sh test     ... then install a CUDA toolkit where none is found,
#                       run the CUDA checks (kernels, declarations, memory
#                       ordering), go vet, gofmt, the tests with -race
#                       (fault tests and a short soak included), the device
#                       code on CPU threads three more ways (small ring,
#                       caller-only __activemask, ThreadSanitizer),
#                       bounded fuzzing, and the CUDA container built and
#                       run with podman (scripts/container-check.sh)
#
# Needs Go 1.22 or newer (as go.mod says) on PATH or in /usr/local/go/bin. Installs
# liburing-dev, pkg-config and fio with apt-get when they are missing:
# liburing is linked statically, so the binaries need no liburing at run
# time; fio is only for `megaio bench`.
set -euo pipefail
cd "$(dirname "$0")"

export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: Go is not installed (https://go.dev/doc/install)" >&2; exit 1; }

need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v g++ >/dev/null || need+=(g++) # kernels on CPU threads: the examples, the demo, kernels_test.go
command -v fio >/dev/null || need+=(fio) # for `megaio bench`
# libcu++'s headers (cuda/atomic), which megaio_device.cuh includes: a CUDA
# toolkit has them; Debian's main archive ships them alone (libcu++-dev,
# 5.5 MB), enough to run kernels on CPU threads.
libcuxx=no
for d in "${MEGAIO_LIBCUXX:-}" "${CUDA_HOME:-/nonexistent}/include" "${CUDA_HOME:-/nonexistent}/include/cccl" \
	/usr/local/cuda/include /usr/local/cuda/include/cccl /usr/include; do
	[ -n "$d" ] && [ -f "$d/cuda/atomic" ] && libcuxx=yes
done
[ $libcuxx = yes ] || need+=(libcu++-dev)
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "build.sh: installing ${need[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CGO_ENABLED=1
# Two modules: the library at the root, and the commands in cmd/ (their
# own go.mod, so the plotting stack the benchmark needs never reaches a
# program that imports the library).
go mod download
(cd cmd && go mod download && go build -o ../bin/megaio ./megaio)
# The examples (examples/): a kernel source to a running persistent kernel.
for ex in checksum checkpoint warpread; do
	go build -o "bin/example-$ex" "./examples/$ex"
done

# The CUDA half: kernels compiled for every target architecture, our
# driver and cuFile declarations checked against cuda.h and cufile.h, and the
# device protocol's memory ordering checked in the generated PTX and SASS
# (scripts/cuda-checks.sh). `test` installs Debian's CUDA toolkit where none
# is found (scripts/install-cuda-toolkit.sh; MEGAIO_NO_CUDA_TOOLKIT=1 skips
# it) and fails on any CUDA check; the other modes run the checks where a
# toolkit is installed and report a failure without stopping.
mode="${1:-build}"
# The container runtimes' default seccomp profile, which
# deploy/seccomp-io_uring.json extends (TestSeccompProfile compares them):
# taken from Debian's golang-github-containers-common package, extracted
# into build/ rather than installed (the package would pull in container
# networking).
if [ "$mode" = test ] && [ ! -f /usr/share/containers/seccomp.json ] && [ ! -f build/runtime-seccomp.json ]; then
	tmp="$(mktemp -d)"
	(cd "$tmp" && { apt-get download golang-github-containers-common >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get download golang-github-containers-common >/dev/null 2>&1; }; }) &&
		dpkg-deb -x "$tmp"/golang-github-containers-common_*.deb "$tmp/x" &&
		mkdir -p build && cp "$tmp/x/usr/share/containers/seccomp.json" build/runtime-seccomp.json ||
		echo "build.sh: could not fetch the runtime's default seccomp profile; TestSeccompProfile will say so" >&2
	rm -rf "$tmp"
fi
if [ "$mode" = test ] && [ -z "${MEGAIO_NO_CUDA_TOOLKIT:-}" ]; then
	scripts/install-cuda-toolkit.sh
fi
# The CUDA checks are part of `test` only (about 50 s: every kernel for
# every architecture); scripts/cuda-checks.sh runs them alone.
# shellcheck source=scripts/cuda-env.sh
. scripts/cuda-env.sh
if [ "$mode" != test ]; then
	:
elif [ -n "$(megaio_find_nvcc)" ]; then
	scripts/cuda-checks.sh
elif [ "${CI:-}" = true ]; then
	echo "build.sh: CI needs a CUDA toolkit for the CUDA checks and none was found or installed" >&2
	exit 1
else
	echo "build.sh: no CUDA toolkit: CUDA checks NOT RUN (scripts/install-cuda-toolkit.sh installs Debian's)"
fi

case "$mode" in
build) ;;
demo)
	shift
	# The mission first: a persistent kernel, written against
	# include/megaio_device.cuh, reads a file through the loop and checksums
	# it until told to stop (on a GPU where there is one, else on CPU
	# threads; it says which). Then host producers at full speed.
	./bin/example-checksum
	./bin/megaio demo "$@"
	;;
test)
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	if [ -n "$unformatted" ]; then
		echo "build.sh: gofmt would change: $unformatted" >&2
		exit 1
	fi
	go vet ./...
	(cd cmd && go vet ./...)
	# The oldest Go that go.mod names must really build it: vet (which
	# type-checks the tests too) both modules with that toolchain, fetched
	# through the module proxy (golang.org/toolchain).
	oldest="go$(sed -n 's/^go //p' go.mod)"
	GOTOOLCHAIN="$oldest" go vet ./...
	(cd cmd && GOTOOLCHAIN="$oldest" go vet ./...)
	echo "build.sh: $oldest builds and vets both modules"
	# The device half on CPU threads (kernels_test.go: the TestCPU* twins of
	# the TestGPU* tests, the same kernels built by g++ against
	# include/megaio_cpu.h) runs in the suite below, and then three more
	# ways. With the toolkit installed, a twin that cannot run fails.
	[ -z "${MEGAIO_NO_CUDA_TOOLKIT:-}" ] && export MEGAIO_REQUIRE_CPU_KERNELS=1
	# A plain `go test ./...` skips TestSeccompProfile without the runtime's
	# profile; here it was fetched above, and its absence is a failure.
	export MEGAIO_REQUIRE_RUNTIME_PROFILE=1
	# Every wait in the tests is bounded by the absence of progress (60 s
	# with nothing moving fails it, saying what was stuck: watchdog_test.go),
	# never by elapsed time. go test's own -timeout (10 min by default, for
	# a whole package) is only the last resort for a wait no watchdog
	# covers: set far above the suite's time on a loaded machine, so that a
	# slow run is never cut, and within CI's limit.
	t="-timeout=${MEGAIO_GO_TEST_TIMEOUT:-45m}"
	go test "$t" -race -count=1 ./...
	(cd cmd && go test "$t" -race -count=1 ./...)
	twins='^TestCPU(Checksum|DeviceChecksum|PingPong|Warp2D|StopRestart|DoublePin|Launcher)$'
	echo "build.sh: the CPU twins with a ring of 64 slots (the ring-full path)"
	MEGAIO_CPU_CAPACITY=64 go test "$t" -count=1 -run "$twins" .
	echo "build.sh: the CPU twins with __activemask() naming only the calling lane"
	MEGAIO_CPU_ACTIVEMASK=caller go test "$t" -count=1 -run "$twins" .
	# ThreadSanitizer: -tags megaio_tsan builds the kernels with
	# -fsanitize=thread and links its runtime into the test binary. Go's
	# -race carries another copy of that runtime, so the two never meet.
	echo "build.sh: the CPU twins under ThreadSanitizer"
	TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/testdata/tsan.supp ${TSAN_OPTIONS:-}" \
		go test "$t" -tags megaio_tsan -count=1 -run "$twins" .
	# A program that imports the library gets none of the commands'
	# dependencies (scripts/consumer-check.sh).
	scripts/consumer-check.sh
	# Bounded fuzzing (FUZZTIME=10m ./build.sh test for a longer run); the
	# corpus lives in testdata/fuzz. The default bound is a count of inputs,
	# not a duration: Go 1.26's fuzz coordinator can fail a run that ends on
	# a wall-clock -fuzztime with a bare "context deadline exceeded" when a
	# loaded machine starves its workers at the deadline (golang/go#75804,
	# fixed in Go 1.27). Each count is about 10 s on a 2-vCPU machine.
	# Minimizing a new interesting input may take up to a minute by default,
	# during which the count does not move: 5 s is enough for a corpus entry.
	for spec in FuzzCheckRange:300000x FuzzLiveQueue:20000x FuzzNextPiece:300000x; do
		target=${spec%%:*}
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-${spec#*:}}" -fuzzminimizetime 5s .
	done
	# The CUDA container: the Dockerfile built with podman on a local Debian
	# base, the demo and the suite run inside under both seccomp profiles
	# (scripts/container-check.sh, about 8 minutes on a fresh machine;
	# MEGAIO_NO_CONTAINER_CHECK=1 skips it). As root podman can run here,
	# so a skip is a failure; without root the script skips, saying why.
	if [ -z "${MEGAIO_NO_CONTAINER_CHECK:-}" ]; then
		require=""
		[ "$(id -u)" -eq 0 ] && require=1
		MEGAIO_REQUIRE_CONTAINER="$require" scripts/container-check.sh
	fi
	;;
*)
	echo "usage: $0 [build|demo|test]" >&2
	exit 2
	;;
esac
