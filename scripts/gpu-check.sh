#!/usr/bin/env bash
# gpu-check.sh - run megaio's GPU suite on a machine that has a GPU but no Go.
#
#   scripts/gpu-check.sh bundle [DIR]   here: build the test binary (liburing
#                                       linked statically) and copy the CUDA
#                                       sources into DIR (default gpu-bundle/)
#   DIR/run.sh                          there: compile the kernels with nvcc,
#                                       check our driver declarations against
#                                       cuda.h, run the GPU tests; logs go to
#                                       $OUT (or DIR/logs)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${2:-gpu-bundle}"
case "${1:-}" in
bundle)
	export PATH="$PATH:/usr/local/go/bin" CGO_ENABLED=1
	rm -rf "$dir" && mkdir -p "$dir/src/include" "$dir/src/csrc/gpu" "$dir/testdata/fakecuda"
	go test -c -o "$dir/megaio.test" .
	cp include/megaio.h include/megaio_device.cuh "$dir/src/include/"
	# Files the tests read relative to the package directory.
	cp -r include deploy "$dir/"
	cp csrc/cuda_shim.h csrc/cuda_check.c csrc/cufile_shim.h csrc/cufile_check.c "$dir/src/csrc/"
	cp testdata/fakecuda/*.c "$dir/testdata/fakecuda/" # TestDeviceFakeDriver builds them with gcc
	cp csrc/gpu/megakernel.cu "$dir/src/csrc/gpu/"
	cp scripts/gpu-run.sh "$dir/run.sh"
	chmod +x "$dir/run.sh"
	echo "gpu-check.sh: bundle in $dir ($(du -sh "$dir" | cut -f1)); run $dir/run.sh on the GPU machine"
	;;
*)
	echo "usage: $0 bundle [DIR]" >&2
	exit 2
	;;
esac
