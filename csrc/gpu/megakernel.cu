/*
 * megakernel.cu - persistent kernels that do their IO through megaio.
 *
 * megaio_checksum: every block (1-D, any number of threads) loops over
 * chunks of a file (chunk c goes to block c mod gridDim). Thread 0 publishes the READ of the block's next
 * chunk while the whole block sums the current one (double buffering in the
 * block's two regions of the mapped destination), so disk reads and GPU
 * work overlap. The checksum is position-weighted, so a chunk landing in
 * the wrong place changes it: sum of byte[i] * ((i mod 65521) + 1), mod 2^64.
 * The last chunk is read past EOF on purpose: its result must be 0.
 *
 * megaio_pingpong: one thread sends n NOPs, one at a time, and records each
 * GPU -> host -> GPU round trip with %globaltimer (nanoseconds).
 *
 * megaio_warp2d and megaio_stop_restart test the device header: the warp
 * helper in 2-D blocks, and megaio_dev_wait across the loop's stops and
 * restarts (TestGPUWarp2D, TestGPUStopRestart).
 *
 * Compiled by scripts/cuda-checks.sh (through build.sh) with nvcc for every
 * target architecture (never needed to build or test the Go package);
 * loaded by the Go tests with cuModuleLoadData. The same file compiled by
 * g++ runs on CPU threads (megaio_cpu.h; the TestCPU* tests): each kernel
 * is named for that launcher by MEGAIO_CPU_KERNEL, which is nothing on a
 * GPU, and block-shared variables are MEGAIO_BLOCK_SHARED.
 */
#include "megaio_device.cuh"

__device__ inline unsigned long long weight(unsigned long long pos) { return pos % 65521ULL + 1ULL; }

/* file_dest packs the file handle (high 32 bits) and destination handle. */
extern "C" __global__ void megaio_checksum(unsigned long long queue, unsigned long long side,
					   unsigned long long dest_mem, unsigned long long file_dest,
					   unsigned long long file_size, unsigned long long chunk,
					   unsigned long long out, unsigned long long errors)
{
	MEGAIO_BLOCK_SHARED(megaio_dev_queue, q);
	MEGAIO_BLOCK_SHARED(unsigned long long[2], ticket);
	MEGAIO_BLOCK_SHARED(long long, result);
	MEGAIO_BLOCK_SHARED(unsigned long long[32], partial);
	if (blockDim.y != 1 || blockDim.z != 1) { /* 1-D blocks only: threads are told apart by threadIdx.x */
		if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)
			atomicAdd((unsigned long long *)errors, 1ULL);
		return;
	}
	if (threadIdx.x == 0)
		q = megaio_dev_attach((void *)queue, (void *)side);
	__syncthreads();

	const unsigned long long nchunks = (file_size + chunk - 1) / chunk + 1; /* one chunk past EOF */
	megaio_request req = {};
	req.op = MEGAIO_OP_READ;
	req.file = (uint32_t)(file_dest >> 32);
	req.dest = (uint32_t)file_dest;
	req.length = chunk;
	int buf = 0;
	unsigned long long c = blockIdx.x;
	/* Two requests in flight per block, with the block's two completion
	 * ids: the table needs 2 * gridDim.x ids. */
	if (threadIdx.x == 0 && c < nchunks) {
		req.file_offset = c * chunk;
		req.dest_offset = (2ULL * blockIdx.x + buf) * chunk;
		if (megaio_dev_submit(q, req, megaio_dev_block_cid(2, buf), &ticket[buf]) < 0)
			atomicAdd((unsigned long long *)errors, 1ULL);
	}
	for (; c < nchunks; c += gridDim.x) {
		unsigned long long next = c + gridDim.x;
		if (threadIdx.x == 0) {
			result = megaio_dev_wait(q, megaio_dev_block_cid(2, buf), ticket[buf]);
			if (next < nchunks) { /* the next read runs while we sum this chunk */
				req.file_offset = next * chunk;
				req.dest_offset = (2ULL * blockIdx.x + (buf ^ 1)) * chunk;
				if (megaio_dev_submit(q, req, megaio_dev_block_cid(2, buf ^ 1), &ticket[buf ^ 1]) < 0)
					atomicAdd((unsigned long long *)errors, 1ULL);
			}
			unsigned long long want = c * chunk < file_size ? min(chunk, file_size - c * chunk) : 0;
			if (result != (long long)want)
				atomicAdd((unsigned long long *)errors, 1ULL);
		}
		__syncthreads();
		long long n = result < 0 ? 0 : result;
		/* The loop published done with release after the bytes landed
		 * (in mapped host memory, or in device memory once the bounce
		 * path's copy or the GDS DMA completed); megaio_dev_wait's
		 * acquire orders these loads after it, and volatile loads fetch
		 * the memory afresh, not from an L1 line cached when this buffer
		 * held an older chunk (DMA engines do not invalidate L1). */
		const volatile unsigned char *data =
		    (const volatile unsigned char *)(dest_mem + (2ULL * blockIdx.x + buf) * chunk);
		unsigned long long sum = 0, base = c * chunk;
		for (long long i = threadIdx.x; i < n; i += blockDim.x)
			sum += (unsigned long long)data[i] * weight(base + i);
		/* The warp's sum: a shuffle over the lanes the warp has (the last
		 * warp is short when blockDim.x is not a multiple of 32), adding
		 * only values that came from one of them. */
		const unsigned lanes = megaio_warp_lanes(), lane = threadIdx.x % 32;
		for (unsigned off = 16; off > 0; off /= 2) {
			unsigned long long v = __shfl_down_sync(lanes, sum, off);
			if (lane + off < 32 && (lanes >> (lane + off) & 1))
				sum += v;
		}
		if (threadIdx.x % 32 == 0)
			partial[threadIdx.x / 32] = sum;
		__syncthreads();
		if (threadIdx.x == 0) {
			unsigned long long total = 0;
			for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++)
				total += partial[w];
			atomicAdd((unsigned long long *)out, total);
		}
		__syncthreads(); /* this buffer is refilled only after everyone is done with it */
		buf ^= 1;
	}
}
MEGAIO_CPU_KERNEL(megaio_checksum);

extern "C" __global__ void megaio_pingpong(unsigned long long queue, unsigned long long side, unsigned long long n,
					   unsigned long long times)
{
	if (blockIdx.x != 0 || threadIdx.x != 0)
		return;
	megaio_dev_queue q = megaio_dev_attach((void *)queue, (void *)side);
	megaio_request nop = {};
	nop.op = MEGAIO_OP_NOP;
	long long *out = (long long *)times;
	for (unsigned long long i = 0; i < n; i++) {
		unsigned long long t0 = megaio_globaltimer();
		long long r = megaio_dev_request(q, nop, 0); /* the one thread's id */
		unsigned long long t1 = megaio_globaltimer();
		out[i] = r == 0 ? (long long)(t1 - t0) : r;
	}
}
MEGAIO_CPU_KERNEL(megaio_pingpong);

/* megaio_warp2d: every warp of a 2-D block (blockDim 16 x 8 in the test:
 * each warp spans two rows, so threadIdx.x % 32 is not the lane) reads one
 * chunk with megaio_warp_request; every thread writes the result it was
 * broadcast to results[linear thread index]. The warp's chunk is chunk
 * number (block * warps per block + warp). The host checks one request per
 * warp and every thread's result. */
extern "C" __global__ void megaio_warp2d(unsigned long long queue, unsigned long long side,
					 unsigned long long file_dest, unsigned long long chunk,
					 unsigned long long results)
{
	megaio_dev_queue q = megaio_dev_attach((void *)queue, (void *)side);
	unsigned tid = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
	unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
	unsigned long long warp = (unsigned long long)blockIdx.x * ((per_block + 31) / 32) + tid / 32;
	megaio_request req = {};
	req.op = MEGAIO_OP_READ;
	req.file = (uint32_t)(file_dest >> 32);
	req.dest = (uint32_t)file_dest;
	req.file_offset = warp * chunk;
	req.dest_offset = warp * chunk;
	req.length = chunk;
	long long r = megaio_warp_request(q, req, megaio_dev_warp_cid(1, 0));
	((long long *)results)[(unsigned long long)blockIdx.x * per_block + tid] = r;
}
MEGAIO_CPU_KERNEL(megaio_warp2d);

/* megaio_stop_restart: every thread sends `rounds` NOPs, one at a time,
 * while the host stops and restarts the loop. What a NOP may see across a
 * stop (megaio.h, "Stopping"):
 *   - 0: served;
 *   - -ECANCELED: claimed after Stop began (the final sweep); the NOP is
 *     answered, the thread goes on to its next one;
 *   - -ESHUTDOWN from the wait: the loop stopped without claiming it; the
 *     thread waits again, and a loop started later serves it.
 * A -ESHUTDOWN for a ticket the loop had served is a failure. The host
 * keeps a stop epoch in mapped memory: odd from the moment Stop returned
 * until just before the next Start. A thread that reads the same odd epoch
 * before a wait that answered -ESHUTDOWN and after a poll that then found
 * the ticket served knows no loop ran in between: the ticket was served
 * before the wait began, and the -ESHUTDOWN was false. (It holds however
 * long the thread is descheduled, as CPU threads are.)
 * counts: [0] -ESHUTDOWN answers, [1] false ones, [2] results that are
 * neither 0 nor -ECANCELED, [3] NOPs answered 0, [4] NOPs answered
 * -ECANCELED. Every NOP ends as [3] or [4]; the host compares them with the
 * loop's own counters. */
extern "C" __global__ void megaio_stop_restart(unsigned long long queue, unsigned long long side,
					       unsigned long long rounds, unsigned long long counts,
					       unsigned long long epoch)
{
	megaio_dev_queue q = megaio_dev_attach((void *)queue, (void *)side);
	unsigned long long *n = (unsigned long long *)counts;
	megaio_sys_u64 stop_epoch(*(uint64_t *)epoch);
	megaio_request nop = {};
	nop.op = MEGAIO_OP_NOP;
	const uint32_t cid = megaio_dev_thread_cid(1, 0);
	for (unsigned long long i = 0; i < rounds; i++) {
		unsigned long long t;
		while (megaio_dev_submit(q, nop, cid, &t) < 0) /* full and stopped: wait for a restart */
			__nanosleep(1000);
		long long r;
		for (;;) {
			uint64_t e0 = stop_epoch.load(cuda::memory_order_acquire);
			if ((r = megaio_dev_wait(q, cid, t)) != -MEGAIO_ESHUTDOWN)
				break;
			atomicAdd(&n[0], 1ULL);
			bool served = megaio_dev_poll(q, cid, t, &r);
			uint64_t e1 = stop_epoch.load(cuda::memory_order_acquire);
			if (served) {
				if (e0 == e1 && (e0 & 1))
					atomicAdd(&n[1], 1ULL);
				break;
			}
			__nanosleep(1000);
		}
		if (r == 0)
			atomicAdd(&n[3], 1ULL);
		else if (r == -MEGAIO_ECANCELED)
			atomicAdd(&n[4], 1ULL);
		else
			atomicAdd(&n[2], 1ULL);
	}
}
MEGAIO_CPU_KERNEL(megaio_stop_restart);
