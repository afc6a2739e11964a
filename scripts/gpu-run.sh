#!/usr/bin/env bash
# gpu-run.sh - copied into the GPU bundle as run.sh by scripts/gpu-check.sh.
# Runs on the GPU machine from the bundle's directory.
set -uo pipefail
cd "$(dirname "$0")"
logs="${OUT:-$PWD/logs}"
mkdir -p "$logs" build
{
	date -u +"date: %FT%TZ"
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
	nvcc --version | tail -n 2
	uname -r
} >"$logs/machine.txt" 2>&1
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
status=0
if gcc -std=c11 -Wall -Werror -fsyntax-only -I"$cuda_home/include" -Isrc/csrc src/csrc/cuda_check.c >"$logs/cuda_check.txt" 2>&1; then
	echo "cuda_check: PASS (csrc/cuda_shim.h matches $cuda_home/include/cuda.h)" >>"$logs/cuda_check.txt"
else
	echo "cuda_check: FAIL" >>"$logs/cuda_check.txt"
	status=1
fi
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
if nvcc -std=c++17 -O3 -Isrc/include -fatbin -gencode "arch=compute_${arch:-90},code=sm_${arch:-90}" \
	-o build/megakernel.fatbin src/csrc/gpu/megakernel.cu >"$logs/nvcc.txt" 2>&1; then
	MEGAIO_GPU_KERNELS="$PWD/build/megakernel.fatbin" ./megaio.test -test.run 'CUDA|CUresult|GPU' -test.v -test.count=1 \
		-test.timeout 8m >"$logs/gpu-tests.txt" 2>&1 || status=1
else
	echo "nvcc failed" >>"$logs/nvcc.txt"
	status=1
fi
# The rest of the suite, on this machine too (io_uring, FUSE and the pool).
./megaio.test -test.count=1 -test.timeout 8m >"$logs/all-tests.txt" 2>&1 || status=1
tail -n 3 "$logs"/*.txt
exit $status
