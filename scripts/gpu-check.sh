#!/usr/bin/env bash
# gpu-check.sh - run megaio's GPU suite on a machine that has a GPU but no Go.
#
#   scripts/gpu-check.sh bundle [DIR]   here: build the test binary (liburing
#                                       linked statically) and the examples,
#                                       and copy the CUDA sources into DIR
#                                       (default gpu-bundle/)
#   DIR/run.sh                          there: the CUDA checks for that GPU,
#                                       the GPU and device tests, the
#                                       benchmarks and the whole suite; one
#                                       summary.txt with PASS or FAIL per
#                                       part, logs in $OUT (or DIR/logs)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${2:-gpu-bundle}"
case "${1:-}" in
bundle)
	export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1
	rm -rf "$dir" && mkdir -p "$dir/src/scripts" "$dir/testdata/fakecuda"
	go test -c -o "$dir/megaio.test" .
	go build -o "$dir/scopecheck" ./internal/scopecheck
	# The examples, each building its own kernel with nvcc there.
	for ex in checksum checkpoint warpread; do go build -o "$dir/examples/$ex" "./examples/$ex"; done
	# What cuda-checks.sh reads there, in the repository's layout under src/.
	cp -r include "$dir/src/"
	(cd csrc && find . -name '*.h' -o -name '*.c' -o -name '*.cc' -o -name '*.cu') |
		while read -r f; do mkdir -p "$dir/src/csrc/$(dirname "$f")" && cp "csrc/$f" "$dir/src/csrc/$f"; done
	(find examples -name '*.cu') | while read -r f; do mkdir -p "$dir/src/$(dirname "$f")" && cp "$f" "$dir/src/$f"; done
	cp scripts/cuda-env.sh scripts/cuda-checks.sh "$dir/src/scripts/"
	# Files the tests read relative to the package directory.
	cp -r include deploy "$dir/"
	mkdir -p "$dir/csrc/gpu" "$dir/testdata/cpukernels" && cp csrc/gpu/megakernel.cu "$dir/csrc/gpu/" && cp testdata/cpukernels/*.cu "$dir/testdata/cpukernels/" # the TestCPU* tests build them with g++
	mkdir -p "$dir/scripts" && cp scripts/cuda-env.sh "$dir/scripts/" # TestBundleDiscovery
	cp testdata/fakecuda/*.[ch] "$dir/testdata/fakecuda/" # TestDeviceFakeDriver builds them with gcc
	cp scripts/gpu-run.sh "$dir/run.sh"
	chmod +x "$dir/run.sh"
	echo "gpu-check.sh: bundle in $dir ($(du -sh "$dir" | cut -f1)); run $dir/run.sh on the GPU machine"
	;;
*)
	echo "usage: $0 bundle [DIR]" >&2
	exit 2
	;;
esac
