/*
 * megakernel.cu - persistent kernels that do their IO through megaio.
 *
 * megaio_checksum: every block loops over chunks of a file (chunk c goes to
 * block c mod gridDim). Thread 0 publishes the READ of the block's next
 * chunk while the whole block sums the current one (double buffering in the
 * block's two regions of the mapped destination), so disk reads and GPU
 * work overlap. The checksum is position-weighted, so a chunk landing in
 * the wrong place changes it: sum of byte[i] * ((i mod 65521) + 1), mod 2^64.
 * The last chunk is read past EOF on purpose: its result must be 0.
 *
 * megaio_pingpong: one thread sends n NOPs, one at a time, and records each
 * GPU -> host -> GPU round trip with %globaltimer (nanoseconds).
 *
 * Compiled by build.sh with nvcc (never needed to build or test the Go
 * package); loaded by the Go tests with cuModuleLoadData.
 */
#include "megaio_device.cuh"

__device__ inline unsigned long long weight(unsigned long long pos) { return pos % 65521ULL + 1ULL; }

/* file_dest packs the file handle (high 32 bits) and destination handle. */
extern "C" __global__ void megaio_checksum(unsigned long long queue, unsigned long long side,
					   unsigned long long dest_mem, unsigned long long file_dest,
					   unsigned long long file_size, unsigned long long chunk,
					   unsigned long long out, unsigned long long errors)
{
	__shared__ megaio_dev_queue q;
	__shared__ unsigned long long ticket[2];
	__shared__ long long result;
	__shared__ unsigned long long partial[32];
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
	if (threadIdx.x == 0 && c < nchunks) {
		req.file_offset = c * chunk;
		req.dest_offset = (2ULL * blockIdx.x + buf) * chunk;
		ticket[buf] = megaio_dev_take_ticket(q);
		megaio_dev_publish(q, ticket[buf], req);
	}
	for (; c < nchunks; c += gridDim.x) {
		unsigned long long next = c + gridDim.x;
		if (threadIdx.x == 0) {
			result = megaio_dev_wait(q, ticket[buf]);
			if (next < nchunks) { /* the next read runs while we sum this chunk */
				req.file_offset = next * chunk;
				req.dest_offset = (2ULL * blockIdx.x + (buf ^ 1)) * chunk;
				ticket[buf ^ 1] = megaio_dev_take_ticket(q);
				megaio_dev_publish(q, ticket[buf ^ 1], req);
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
		for (int off = 16; off > 0; off /= 2)
			sum += __shfl_down_sync(0xffffffff, sum, off);
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
		unsigned long long t0, t1;
		asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
		long long r = megaio_dev_request(q, nop);
		asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
		out[i] = r == 0 ? (long long)(t1 - t0) : r;
	}
}
