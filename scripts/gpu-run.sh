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
# cuFile (GPUDirect Storage): the CUDA toolkit's, or the nvidia-cufile wheel
# that PyTorch brings. Check our declarations against its cufile.h and let
# the tests load its libcufile.so.0.
cufile_inc=""
for d in "$cuda_home/include" "$cuda_home/targets/x86_64-linux/include" \
	$(python3 -c 'import nvidia.cufile, os; print(os.path.dirname(nvidia.cufile.__file__) + "/include")' 2>/dev/null); do
	[ -f "$d/cufile.h" ] && cufile_inc="$d" && break
done
if [ -n "$cufile_inc" ]; then
	if gcc -std=gnu11 -Wall -Werror -fsyntax-only -I"$cuda_home/include" -I"$cufile_inc" -Isrc/csrc src/csrc/cufile_check.c \
		>"$logs/cufile_check.txt" 2>&1; then
		echo "cufile_check: PASS (csrc/cufile_shim.h matches $cufile_inc/cufile.h)" >>"$logs/cufile_check.txt"
	else
		echo "cufile_check: FAIL" >>"$logs/cufile_check.txt"
		status=1
	fi
	lib="$(dirname "$cufile_inc")/lib"
	[ -d "$lib" ] && export LD_LIBRARY_PATH="$lib:$cuda_home/lib64:${LD_LIBRARY_PATH:-}"
else
	echo "cufile_check: no cufile.h found; the device tests use the bounce path where libcufile.so.0 is missing" \
		>"$logs/cufile_check.txt"
fi
ls /dev/nvidia-fs* >>"$logs/cufile_check.txt" 2>&1 || echo "no nvidia-fs device: cuFile runs in compatibility mode, if at all" >>"$logs/cufile_check.txt"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
if nvcc -std=c++17 -O3 -Isrc/include -fatbin -gencode "arch=compute_${arch:-90},code=sm_${arch:-90}" \
	-o build/megakernel.fatbin src/csrc/gpu/megakernel.cu >"$logs/nvcc.txt" 2>&1; then
	MEGAIO_GPU_KERNELS="$PWD/build/megakernel.fatbin" ./megaio.test -test.run 'CUDA|CUresult|GPU' -test.v -test.count=1 \
		-test.timeout 8m >"$logs/gpu-tests.txt" 2>&1 || status=1
else
	echo "nvcc failed" >>"$logs/nvcc.txt"
	status=1
fi
# Device destinations (GDS and bounce) need no kernels of ours.
./megaio.test -test.run 'Device' -test.v -test.count=1 -test.timeout 8m >"$logs/device-tests.txt" 2>&1 || status=1
# Device-destination throughput, both paths beside the mapped-host one.
./megaio.test -test.run '^$' -test.bench 'BenchmarkDevice' -test.benchtime 2s -test.count 3 -test.v \
	>"$logs/gpu-bench.txt" 2>&1 || status=1
# The rest of the suite, on this machine too (io_uring, FUSE and the pool).
./megaio.test -test.count=1 -test.timeout 8m >"$logs/all-tests.txt" 2>&1 || status=1
tail -n 3 "$logs"/*.txt
exit $status
