/*
 * checksum.cu - a persistent kernel that reads a file through megaio and
 * checksums it, pass after pass, until the host tells it to stop.
 *
 * Block b owns the file's chunks b, b + gridDim.x, b + 2 gridDim.x, ...
 * For each, thread 0 publishes a READ into the block's region of the
 * destination and waits for its result; then the whole block sums the
 * chunk, weighting each byte by its position in the file, so a chunk that
 * lands in the wrong place changes the sum. After each pass over its
 * chunks the block publishes its sum and its pass count into host memory
 * the service reads, then checks the stop word the service writes.
 *
 * The same source runs on a GPU (nvcc) and on CPU threads (g++ against
 * megaio_cpu.h): kernels.Open builds it for whichever it finds.
 */
#include "megaio_device.cuh"

/* The kernel's arguments, in memory the kernel reads (Program.Args): one
 * pointer instead of Launch's at most 8 words. */
struct checksum_args {
	unsigned long long queue, side; /* Program.Attach */
	unsigned long long dest_mem;    /* where the kernel sees the destination's bytes */
	unsigned long long file, dest;  /* handles: Loop.RegisterFile, Loop.AddDestination */
	unsigned long long file_size, chunk;
	unsigned long long control; /* host words: [0] stop; per block b, [1+2b] passes, [2+2b] sum */
	unsigned long long errors;  /* host word: READs with a wrong result, passes whose sum changed */
};

__device__ inline unsigned long long weight(unsigned long long pos) { return pos % 65521ULL + 1ULL; }

extern "C" __global__ void checksum(unsigned long long args)
{
	MEGAIO_BLOCK_SHARED(megaio_dev_queue, q);
	MEGAIO_BLOCK_SHARED(long long, result);
	MEGAIO_BLOCK_SHARED(unsigned long long, block_sum);
	MEGAIO_BLOCK_SHARED(unsigned long long, stop);
	const checksum_args a = *(const checksum_args *)args;
	unsigned long long *control = (unsigned long long *)a.control;
	if (threadIdx.x == 0)
		q = megaio_dev_attach((void *)a.queue, (void *)a.side);

	unsigned long long first = 0;
	for (unsigned long long pass = 1;; pass++) {
		if (threadIdx.x == 0) {
			stop = megaio_dev_load_host(&control[0]);
			block_sum = 0;
		}
		__syncthreads();
		if (stop)
			return; /* nothing in flight: each READ below is collected before the next */

		for (unsigned long long c = blockIdx.x; c * a.chunk < a.file_size; c += gridDim.x) {
			if (threadIdx.x == 0) {
				megaio_request req = {};
				req.op = MEGAIO_OP_READ;
				req.file = (uint32_t)a.file;
				req.dest = (uint32_t)a.dest;
				req.file_offset = c * a.chunk;
				req.dest_offset = blockIdx.x * a.chunk;
				req.length = (uint32_t)a.chunk;
				/* One request in flight per block: the block's one completion id. */
				result = megaio_dev_request(q, req, megaio_dev_block_cid(1, 0));
				unsigned long long want = min(a.chunk, a.file_size - c * a.chunk);
				if (result != (long long)want)
					megaio_dev_store_host((unsigned long long *)a.errors, 1);
			}
			__syncthreads();
			/* megaio_dev_request's acquire orders these loads after the
			 * loop's completion; volatile fetches the bytes afresh, not
			 * from an L1 line cached when the region held the last chunk
			 * (DMA does not invalidate L1). */
			const volatile unsigned char *data =
			    (const volatile unsigned char *)(a.dest_mem + blockIdx.x * a.chunk);
			unsigned long long sum = 0;
			for (long long i = threadIdx.x; i < result; i += blockDim.x)
				sum += (unsigned long long)data[i] * weight(c * a.chunk + i);
			atomicAdd(&block_sum, sum);
			__syncthreads(); /* the region is refilled only once every thread is done with it */
		}
		if (threadIdx.x == 0) {
			if (pass == 1)
				first = block_sum;
			else if (block_sum != first)
				megaio_dev_store_host((unsigned long long *)a.errors, 1);
			megaio_dev_store_host(&control[2 + 2 * blockIdx.x], block_sum);
			megaio_dev_store_host(&control[1 + 2 * blockIdx.x], pass); /* after the sum: the host reads it first */
		}
		__syncthreads(); /* stop and block_sum are thread 0's to write again */
	}
}
MEGAIO_CPU_KERNEL(checksum);
