/*
 * warpread.cu - a warp per request: every warp of the grid reads large
 * chunks of a file (one READ per warp, published by one lane for all 32
 * with megaio_warp_request) and sums them together, each lane a stripe of
 * the chunk, the lanes' sums added with a shuffle. Warp w takes chunks w,
 * w + warps, w + 2 warps, ... and writes its total into the kernels' own
 * memory (device memory on a GPU), which the host copies out after the
 * kernel has ended.
 *
 * One request per warp keeps 32x fewer queue slots and completion ids busy
 * than one per thread, and suits chunks large enough that the loop's cost
 * per request vanishes beside the transfer.
 */
#include "megaio_device.cuh"

struct warpread_args {
	unsigned long long queue, side; /* Program.Attach */
	unsigned long long dest_mem;    /* where the kernel sees the destination: one chunk per warp */
	unsigned long long file, dest;  /* handles */
	unsigned long long file_size, chunk;
	unsigned long long sums; /* kernels' memory: one word per warp, then one error word per warp */
};

extern "C" __global__ void warpread(unsigned long long args)
{
	MEGAIO_BLOCK_SHARED(megaio_dev_queue, q);
	const warpread_args a = *(const warpread_args *)args;
	if (threadIdx.x == 0)
		q = megaio_dev_attach((void *)a.queue, (void *)a.side);
	__syncthreads();

	const unsigned long long warps_per_block = (blockDim.x + 31) / 32;
	const unsigned long long warps = gridDim.x * warps_per_block;
	const unsigned long long warp = blockIdx.x * warps_per_block + threadIdx.x / 32;
	const unsigned lane = threadIdx.x % 32, lanes = megaio_warp_lanes();
	unsigned long long *sums = (unsigned long long *)a.sums, total = 0, errors = 0;

	for (unsigned long long c = warp; c * a.chunk < a.file_size; c += warps) {
		megaio_request req = {};
		req.op = MEGAIO_OP_READ;
		req.file = (uint32_t)a.file;
		req.dest = (uint32_t)a.dest;
		req.file_offset = c * a.chunk;
		req.dest_offset = warp * a.chunk;
		req.length = (uint32_t)a.chunk;
		/* Every lane calls it; lane 0 publishes with the warp's own id. */
		long long n = megaio_warp_request(q, req, megaio_dev_warp_cid(1, 0));
		if (n != (long long)min(a.chunk, a.file_size - c * a.chunk))
			errors++;
		const volatile unsigned char *data = (const volatile unsigned char *)(a.dest_mem + warp * a.chunk);
		/* Each lane a stripe; a short last warp (blockDim.x not a multiple
		 * of 32) has fewer lanes, and its stripes are wider. */
		unsigned long long sum = 0;
		for (long long i = lane; i < n; i += __popc(lanes))
			sum += (unsigned long long)data[i] * ((c * a.chunk + i) % 65521 + 1);
		for (unsigned off = 16; off > 0; off /= 2) {
			unsigned long long v = __shfl_down_sync(lanes, sum, off);
			if (lane + off < 32 && (lanes >> (lane + off) & 1))
				sum += v;
		}
		total += sum; /* lane 0's is the warp's */
		__syncwarp(lanes); /* the chunk's region is reused only once every lane has read it */
	}
	if (lane == 0) {
		sums[warp] = total;
		sums[warps + warp] = errors;
	}
}
MEGAIO_CPU_KERNEL(warpread);
