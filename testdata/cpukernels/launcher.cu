/*
 * launcher.cu - kernels that test the CPU launcher itself (include/megaio_cpu.h,
 * TestCPULauncher): what it promises (block-shared storage per block, the
 * two __activemask() modes, ballots over short warps) and what it catches
 * (a warp mask naming lanes a short warp lacks, lanes that disagree on a
 * warp operation, a kernel that never ends). Built for the host only.
 */
#include "megaio_device.cuh"

/* Thread 0 of each block stores its block number + 1 in block-shared
 * storage; after the barrier every thread writes what it reads there. */
extern "C" __global__ void shared_per_block(unsigned long long out)
{
	MEGAIO_BLOCK_SHARED(unsigned long long, v);
	unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
	if (megaio_thread_in_block() == 0)
		v = megaio_block_in_grid() + 1;
	__syncthreads();
	((unsigned long long *)out)[megaio_block_in_grid() * per_block + megaio_thread_in_block()] = v;
}
MEGAIO_CPU_KERNEL(shared_per_block);

/* A shuffle over the full 32-lane mask, whatever the block's size: in a
 * short warp the mask names lanes that do not exist. */
extern "C" __global__ void full_mask_shuffle(unsigned long long out)
{
	unsigned long long v = __shfl_down_sync(0xffffffffu, (unsigned long long)threadIdx.x, 1);
	((unsigned long long *)out)[threadIdx.x] = v;
}
MEGAIO_CPU_KERNEL(full_mask_shuffle);

/* out[2i] = __activemask(), out[2i+1] = the ballot of odd lanes over the
 * lanes the warp has. */
extern "C" __global__ void masks(unsigned long long out)
{
	unsigned a = __activemask();
	unsigned b = __ballot_sync(megaio_warp_lanes(), threadIdx.x & 1);
	((unsigned long long *)out)[2 * threadIdx.x] = a;
	((unsigned long long *)out)[2 * threadIdx.x + 1] = b;
}
MEGAIO_CPU_KERNEL(masks);

/* Even lanes sync with the even lanes, odd lanes with the whole warp: the
 * masks overlap and differ. */
extern "C" __global__ void divergent_syncwarp(unsigned long long unused)
{
	(void)unused;
	if (threadIdx.x % 2 == 0)
		__syncwarp(0x55555555u);
	else
		__syncwarp(0xffffffffu);
}
MEGAIO_CPU_KERNEL(divergent_syncwarp);

/* Waits, with __nanosleep, for a flag nobody sets. */
extern "C" __global__ void never_ends(unsigned long long flag)
{
	cuda::atomic_ref<unsigned long long, cuda::thread_scope_system> f(*(unsigned long long *)flag);
	while (f.load(cuda::memory_order_acquire) == 0)
		__nanosleep(1000);
}
MEGAIO_CPU_KERNEL(never_ends);
