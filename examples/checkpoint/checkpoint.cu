/*
 * checkpoint.cu - a persistent kernel that spills its state to a file
 * through megaio: every block computes a region of results in host memory
 * the loop can reach, WRITEs it to its place in the file, and after its
 * last step FSYNCs the file, so the checkpoint is on stable storage before
 * the block reports itself done.
 *
 * The "state" is a pattern the host can recompute: byte i of step s of
 * block b is (i * 131 + b * 7 + s * 13) mod 251. Block b writes step s at
 * file offset (s * gridDim.x + b) * region: the file ends up holding every
 * step of every block, in order.
 */
#include "megaio_device.cuh"

struct checkpoint_args {
	unsigned long long queue, side; /* Program.Attach */
	unsigned long long staging;     /* where the kernel sees the staging buffer: one region per block */
	unsigned long long file, dest;  /* handles: the file (opened for writing), the staging buffer's destination */
	unsigned long long region;      /* bytes a block writes a step */
	unsigned long long steps;
	unsigned long long done; /* host words: per block b, [b] = steps written and synced; then the error word */
};

extern "C" __global__ void checkpoint(unsigned long long args)
{
	MEGAIO_BLOCK_SHARED(megaio_dev_queue, q);
	MEGAIO_BLOCK_SHARED(long long, result);
	const checkpoint_args a = *(const checkpoint_args *)args;
	unsigned long long *done = (unsigned long long *)a.done, *errors = done + gridDim.x;
	if (threadIdx.x == 0)
		q = megaio_dev_attach((void *)a.queue, (void *)a.side);
	unsigned char *mine = (unsigned char *)a.staging + blockIdx.x * a.region;

	for (unsigned long long s = 0; s < a.steps; s++) {
		/* Compute: every thread fills its share of the block's region. */
		for (unsigned long long i = threadIdx.x; i < a.region; i += blockDim.x)
			mine[i] = (unsigned char)((i * 131 + blockIdx.x * 7 + s * 13) % 251);
		/* The loop reads the region from host memory: make every thread's
		 * stores visible beyond the GPU before thread 0 publishes. */
		__threadfence_system();
		__syncthreads();
		if (threadIdx.x == 0) {
			megaio_request req = {};
			req.op = MEGAIO_OP_WRITE;
			req.file = (uint32_t)a.file;
			req.dest = (uint32_t)a.dest;
			req.file_offset = (s * gridDim.x + blockIdx.x) * a.region;
			req.dest_offset = blockIdx.x * a.region;
			req.length = (uint32_t)a.region;
			result = megaio_dev_request(q, req, megaio_dev_block_cid(1, 0));
			if (result != (long long)a.region)
				megaio_dev_store_host(&errors[blockIdx.x], (unsigned long long)-result);
		}
		__syncthreads(); /* the region is overwritten only after the loop has written it out */
	}
	if (threadIdx.x == 0) {
		megaio_request req = {};
		req.op = MEGAIO_OP_FSYNC;
		req.file = (uint32_t)a.file;
		result = megaio_dev_request(q, req, megaio_dev_block_cid(1, 0));
		if (result != 0)
			megaio_dev_store_host(&errors[blockIdx.x], (unsigned long long)-result);
		megaio_dev_store_host(&done[blockIdx.x], a.steps);
	}
}
MEGAIO_CPU_KERNEL(checkpoint);
