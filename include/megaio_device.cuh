/*
 * megaio_device.cuh - the device half of the megaio queue protocol (ABI
 * version 2), for CUDA kernels. The protocol, its words and their writers
 * are described in megaio.h; the step names P1..P5 below refer to it.
 *
 * Memory: the queue (header, slots, completions) is host memory registered
 * with cuMemHostRegister(DEVICEMAP) and read through its device address; the
 * producer side (ticket counter and cached claim head) is device memory that
 * only GPU threads touch. So:
 *   - the ticket counter and the cached claim head are device-scope atomics
 *     in device memory (the protocol's only read-modify-writes, and they
 *     never cross PCIe);
 *   - seq (published by us, read by the host loop), claim_head and state
 *     (written by the loop) and done/result (written by the loop, read by
 *     us) are system-scope release stores and acquire loads on mapped host
 *     memory: plain 8-byte accesses across PCIe, never read-modify-writes,
 *     which PCIe does not make atomic for the host.
 * Taking a ticket reads claim_head across PCIe only when the cached copy
 * says the ring is full; publishing reads nothing across PCIe.
 *
 * Completion ids: every request names one (megaio.h), and no two requests in
 * flight may name the same one. The helpers megaio_dev_thread_cid,
 * megaio_dev_warp_cid and megaio_dev_block_cid give each thread, warp or
 * block k ids of its own; size the queue's completion table
 * (QueueConfig.Completions) for the grid.
 *
 * Destinations may be device memory (Loop.NewDeviceBuffer): the loop
 * publishes done only after the bytes are there (the bounce path's copy
 * completed, or GPUDirect Storage reported the IO). Read a region reused for
 * successive requests with volatile loads or __ldcg: DMA writes do not
 * invalidate lines an SM's L1 cached from the region's previous contents.
 *
 * Requires CUDA 11 or newer (libcu++'s cuda::atomic_ref) and sm_70 or newer
 * (__nanosleep, and the acquire/release instructions). The same source
 * compiles for the host, where megaio_cpu.h runs kernels on CPU threads
 * (with ThreadSanitizer if asked) against a real loop.
 */
#ifndef MEGAIO_DEVICE_CUH
#define MEGAIO_DEVICE_CUH

#include <cuda/atomic>

#include "megaio.h"

/* ------------------------------------------------------------------------
 * The target: one protocol source for the GPU and for the CPU launcher.
 * Under nvcc it is CUDA; compiled by a host C++ compiler it runs on CPU
 * threads against a real loop (megaio_cpu.h: the model, and how to build).
 * Everything that differs between the two is in this block; libcu++'s
 * cuda::atomic_ref is the same source on both (on the host it is the
 * compiler's atomics). The GPU's code is unchanged by the CPU half: the
 * hooks below are empty there.
 * ------------------------------------------------------------------------ */
#if !defined(__CUDACC__)
#include "megaio_cpu.h"
#endif

/* T itself: lets MEGAIO_BLOCK_SHARED take array types (unsigned long
 * long[2]) on both targets. */
template <class T> using megaio_id_t = T;

#if defined(__CUDACC__)
/* Block-shared storage: MEGAIO_BLOCK_SHARED(unsigned long long[2], ticket)
 * declares ticket as a __shared__ array on a GPU and one copy per block on
 * the CPU launcher. (A plain `static` would be one copy for every block.) */
#define MEGAIO_BLOCK_SHARED(T, name) __shared__ megaio_id_t<T> name
/* Names a kernel for the CPU launcher; nothing on a GPU. */
#define MEGAIO_CPU_KERNEL(name) static_assert(true, "")

/* The calling thread's lane in its warp (%laneid). In a 2-D or 3-D block
 * threadIdx.x % 32 is not the lane: warps are cut from the linear thread
 * index x + y*Dx + z*Dx*Dy. */
__device__ inline unsigned megaio_lane_id()
{
	unsigned lane;
	asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
	return lane;
}
/* Nanoseconds from %globaltimer. */
__device__ inline unsigned long long megaio_globaltimer()
{
	unsigned long long t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}
/* The protocol's happens-before edges whose other end is the loop: only
 * ThreadSanitizer on the CPU launcher needs them told (see their calls). */
__device__ inline void megaio_hb_release(void *) {}
__device__ inline void megaio_hb_acquire(void *) {}
#else
inline unsigned megaio_lane_id() { return megaio_cpu::lane_id(); }
inline unsigned long long megaio_globaltimer() { return (unsigned long long)megaio_cpu::globaltimer(); }
inline void megaio_hb_release(void *p) { megaio_cpu::hb_release(p); }
inline void megaio_hb_acquire(void *p) { megaio_cpu::hb_acquire(p); }
#endif

/* A device-side view of a queue and its producer side. */
struct megaio_dev_queue {
	megaio_request *slots;          /* mapped host memory */
	megaio_completion *completions; /* mapped host memory */
	megaio_queue_header *header;    /* mapped host memory */
	megaio_producer_side *side;     /* device memory */
	uint64_t mask;                  /* capacity - 1 */
	uint32_t ncompletions;          /* completion ids */
};

/* uint64_t (unsigned long on Linux), the type of the ABI's words. */
using megaio_sys_u64 = cuda::atomic_ref<uint64_t, cuda::thread_scope_system>;
using megaio_sys_u32 = cuda::atomic_ref<uint32_t, cuda::thread_scope_system>;
using megaio_dev_u64 = cuda::atomic_ref<uint64_t, cuda::thread_scope_device>;

/* Builds a view from the queue's device address (Loop.MapForGPU's Queue)
 * and the producer side's device address. Reads the header once. */
__device__ inline megaio_dev_queue megaio_dev_attach(void *queue, void *side)
{
	megaio_dev_queue q;
	q.header = (megaio_queue_header *)queue;
	q.slots = (megaio_request *)((char *)queue + q.header->slots_offset);
	q.completions = (megaio_completion *)((char *)queue + q.header->completions_offset);
	q.side = (megaio_producer_side *)side;
	q.mask = q.header->capacity - 1;
	q.ncompletions = q.header->completions;
	return q;
}

/* The linear index of the calling thread in its block, and of its block in
 * the grid (x fastest, as CUDA numbers them). */
__device__ inline unsigned megaio_thread_in_block()
{
	return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ inline unsigned long long megaio_block_in_grid()
{
	return blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
}

/* Completion ids owned by the calling thread, warp or block: id j of k
 * (0 <= j < k). A thread that keeps k requests in flight uses
 * megaio_dev_thread_cid(k, 0 .. k-1); a kernel whose warps (or blocks)
 * each issue from one lane (or thread) uses the warp (or block) variant.
 * The table needs k ids per thread, warp or block of the grid. */
__device__ inline uint32_t megaio_dev_block_cid(unsigned k, unsigned j)
{
	return (uint32_t)(megaio_block_in_grid() * k + j);
}
__device__ inline uint32_t megaio_dev_thread_cid(unsigned k, unsigned j)
{
	unsigned long long per_block = (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
	return (uint32_t)((megaio_block_in_grid() * per_block + megaio_thread_in_block()) * k + j);
}
__device__ inline uint32_t megaio_dev_warp_cid(unsigned k, unsigned j)
{
	unsigned per_block = (blockDim.x * blockDim.y * blockDim.z + 31) / 32;
	return (uint32_t)((megaio_block_in_grid() * per_block + megaio_thread_in_block() / 32) * k + j);
}

/* Whether the loop has stopped without claiming ticket t, read as
 * megaio_host_poll reads it: state with acquire (it pairs with the loop's
 * release store of state, made after claim_head and after every claimed
 * ticket's done), then claim_head. Both are system-scope acquire loads of
 * mapped host memory: a relaxed or volatile load may return a claim_head
 * older than the state it was read with. */
__device__ inline bool megaio_dev_stopped_before(const megaio_dev_queue &q, unsigned long long t)
{
	if (megaio_sys_u32(q.header->state).load(cuda::memory_order_acquire) != MEGAIO_STATE_STOPPED)
		return false;
	uint64_t head = megaio_sys_u64(q.header->claim_head).load(cuda::memory_order_acquire);
	return (long long)(t - head) >= 0;
}

/* P1: takes ticket *t if its slot is free (the loop claimed the request a
 * lap back). Returns 0, -MEGAIO_EAGAIN (the ring is full) or
 * -MEGAIO_ESHUTDOWN (full because the loop has stopped: no loop will free
 * a slot until one starts again). No ticket is taken on error.
 *
 * The side's claim_seen caches claim_head in device memory, so the common
 * case reads nothing across PCIe. Its acquire load pairs with the release
 * with which a thread raised it after acquiring claim_head from the loop,
 * and happens-before is transitive: the loop's copy of the slot's previous
 * request happens before our stores to the slot. */
__device__ inline int megaio_dev_take_ticket(const megaio_dev_queue &q, unsigned long long *t)
{
	megaio_dev_u64 next(q.side->next_ticket), seen_ref(q.side->claim_seen);
	uint64_t cap = q.mask + 1;
	uint64_t n = next.load(cuda::memory_order_relaxed);
	for (;;) {
		uint64_t seen = seen_ref.load(cuda::memory_order_acquire);
		if (megaio_ring_full(n, seen, cap)) {
			uint64_t head = megaio_sys_u64(q.header->claim_head).load(cuda::memory_order_acquire);
			while ((long long)(head - seen) > 0 &&
			       !seen_ref.compare_exchange_weak(seen, head, cuda::memory_order_release,
							       cuda::memory_order_relaxed))
				;
			if (megaio_ring_full(n, head, cap)) {
				uint64_t again = next.load(cuda::memory_order_relaxed);
				if (again != n) {
					n = again; /* another thread took n: try the next */
					continue;
				}
				if (megaio_sys_u32(q.header->state).load(cuda::memory_order_acquire) == MEGAIO_STATE_STOPPED)
					return -MEGAIO_ESHUTDOWN;
				return -MEGAIO_EAGAIN;
			}
		}
		if (next.compare_exchange_weak(n, n + 1, cuda::memory_order_relaxed, cuda::memory_order_relaxed)) {
			/* The claim edge: ticket n's slot is free because the loop
			 * copied ticket n - capacity out of it, after that ticket's
			 * publisher released it (the hook in megaio_dev_publish). */
			megaio_hb_acquire(&q.slots[n & q.mask]);
			*t = n;
			return 0;
		}
	}
}

/* P3-P4: fills ticket t's slot from req with completion id cid and
 * publishes it. The seq and completion fields of req are ignored. Call once
 * for every ticket taken, at once: the loop claims in ticket order, so a
 * ticket taken and not published holds up every later one. */
__device__ inline void megaio_dev_publish(const megaio_dev_queue &q, unsigned long long t, const megaio_request &req,
					  uint32_t cid)
{
	megaio_request *slot = &q.slots[t & q.mask];
	/* P3: plain stores; nothing reads them until seq says so. */
	slot->op = req.op;
	slot->flags = req.flags;
	slot->file = req.file;
	slot->dest = req.dest;
	slot->completion = cid;
	slot->file_offset = req.file_offset;
	slot->dest_offset = req.dest_offset;
	slot->length = req.length;
	slot->tag = req.tag;
	slot->reserved1 = 0;
	/* The publish edges, for ThreadSanitizer: the loop reads the slot
	 * after this (so the slot's next ticket happens after it: the claim
	 * edge in megaio_dev_take_ticket), and completes the request after it
	 * (so whoever sees its result does: the completion edge in
	 * megaio_dev_poll). */
	megaio_hb_release(slot);
	megaio_hb_release(&q.completions[cid]);
	/* P4: system-scope release: every store above is visible to the host
	 * before seq is, and the loop's acquire load of seq (L1) pairs with it.
	 * A plain store (st.release.sys), not a read-modify-write. */
	megaio_sys_u64(slot->seq).store((uint64_t)(t + 1), cuda::memory_order_release);
}

/* P1-P4 without waiting: returns 0 with *t set, -MEGAIO_EAGAIN (ring
 * full), -MEGAIO_ESHUTDOWN (full and stopped) or -MEGAIO_EINVAL (cid is not
 * a completion id of the queue). */
__device__ inline int megaio_dev_try_submit(const megaio_dev_queue &q, const megaio_request &req, uint32_t cid,
					    unsigned long long *t)
{
	if (cid >= q.ncompletions)
		return -MEGAIO_EINVAL;
	int r = megaio_dev_take_ticket(q, t);
	if (r == 0)
		megaio_dev_publish(q, *t, req, cid);
	return r;
}

/* Like megaio_dev_try_submit, but waits (__nanosleep backoff) while the
 * ring is full and the loop runs. The wait depends only on the loop. */
__device__ inline int megaio_dev_submit(const megaio_dev_queue &q, const megaio_request &req, uint32_t cid,
					unsigned long long *t)
{
	unsigned ns = 32;
	int r;
	while ((r = megaio_dev_try_submit(q, req, cid, t)) == -MEGAIO_EAGAIN) {
		__nanosleep(ns);
		ns = ns < 2048 ? 2 * ns : ns;
	}
	return r;
}

/* P5: non-blocking check of ticket t with completion id cid; returns true
 * with *result set when done (cid is then free for the next request). */
__device__ inline bool megaio_dev_poll(const megaio_dev_queue &q, uint32_t cid, unsigned long long t, long long *result)
{
	megaio_completion *c = &q.completions[cid];
	/* Acquire pairs with the loop's release store of done (L3): the result
	 * read after it is the one written for t. System scope: the host wrote
	 * it. */
	if (megaio_sys_u64(c->done).load(cuda::memory_order_acquire) != (uint64_t)(t + 1))
		return false;
	megaio_hb_acquire(c); /* the completion edge (megaio_dev_publish) */
	*result = *(volatile int64_t *)&c->result;
	return true;
}

/* P5: waits for ticket t's result (with __nanosleep backoff, so a waiting
 * warp leaves the SM's issue slots to others and polls PCIe less) and
 * returns it: bytes moved or a negative errno. It returns -MEGAIO_ESHUTDOWN
 * if the loop stopped without claiming t (the request stays published and
 * cid stays reserved for it: call again, once a loop runs on the queue, to
 * keep waiting).
 *
 * Like megaio_host_poll it re-checks done after seeing STOPPED: the loop
 * stores the done of every ticket it claimed before it stores state, so a
 * done that the first poll missed is seen by the second, and a served
 * ticket is never reported as unserved. */
__device__ inline long long megaio_dev_wait(const megaio_dev_queue &q, uint32_t cid, unsigned long long t)
{
	long long result;
	unsigned ns = 64;
	while (!megaio_dev_poll(q, cid, t, &result)) {
		if (megaio_dev_stopped_before(q, t)) {
			if (megaio_dev_poll(q, cid, t, &result))
				break;
			return -MEGAIO_ESHUTDOWN;
		}
		__nanosleep(ns);
		ns = ns < 4096 ? 2 * ns : ns;
	}
	return result;
}

/* One request from one thread with completion id cid: submit, wait.
 * Returns the result, or -MEGAIO_ESHUTDOWN / -MEGAIO_EINVAL from submit. */
__device__ inline long long megaio_dev_request(const megaio_dev_queue &q, const megaio_request &req, uint32_t cid)
{
	unsigned long long t;
	int r = megaio_dev_submit(q, req, cid, &t);
	if (r < 0)
		return r;
	return megaio_dev_wait(q, cid, t);
}

/* The lanes the calling thread's warp has: all 32, or the first
 * (threads in the block) mod 32 in the last warp of a block whose size is
 * not a multiple of 32. The mask for a warp operation over the whole warp. */
__device__ inline unsigned megaio_warp_lanes()
{
	unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
	unsigned n = per_block - (megaio_thread_in_block() & ~31u);
	return n >= 32 ? 0xffffffffu : (1u << n) - 1;
}

/* Warp-level request: the lanes named in mask call it together, each with
 * the same mask, req and cid; the lowest of them publishes req for the
 * group with completion id cid, and every lane of mask gets the result.
 * cid must be the group's own: megaio_dev_warp_cid when the group is the
 * whole warp; two groups of one warp in flight at once need two ids. */
__device__ inline long long megaio_warp_request_sync(unsigned mask, const megaio_dev_queue &q,
						     const megaio_request &req, uint32_t cid)
{
	int leader = __ffs((int)mask) - 1;
	long long result = 0;
	if ((int)megaio_lane_id() == leader)
		result = megaio_dev_request(q, req, cid);
	return __shfl_sync(mask, result, leader);
}

/* Warp-level variant for the whole warp: every thread of the warp calls it
 * (none has returned, none skips it on a branch of its own), with the same
 * req and the warp's own completion id (megaio_dev_warp_cid). Lane 0
 * publishes req and the result is broadcast to all. One request per warp
 * keeps 32x fewer slots and ids busy when a warp reads a chunk together.
 * Works for any block shape, short last warp included.
 *
 * The group is the warp's lanes, never __activemask(): under independent
 * thread scheduling (sm_70 and newer) __activemask() may name only part of
 * a warp even when every lane runs the same code, and leaders elected from
 * such masks would each publish the request under the one id. */
__device__ inline long long megaio_warp_request(const megaio_dev_queue &q, const megaio_request &req, uint32_t cid)
{
	return megaio_warp_request_sync(megaio_warp_lanes(), q, req, cid);
}

/* ------------------------------------------------------------------------
 * Words shared with the host beside the queue
 * ------------------------------------------------------------------------
 * A persistent kernel runs until it is told to stop, and the service wants
 * to see how far it got. Both go through 64-bit words in host memory the
 * kernel can reach (a loop's Buffer, mapped for the GPU by
 * Loop.MapForGPU or Kernels.Attach), aligned to 8 bytes, which the host
 * reads and writes with atomics (sync/atomic on a *uint64 into
 * Buffer.Bytes()). System scope, because the host is another agent across
 * PCIe; acquire and release, so that what the host wrote before setting a
 * word is visible after the kernel sees it, and what the kernel wrote (its
 * results, in mapped memory) before a progress word is visible to a host
 * that reads that word. Results in device memory are copied out by the
 * host after the kernel ends (Kernels.CopyOut).
 *
 * The stop idiom: the host stores 1 into a stop word; every thread (or
 * one per block, shared by __syncthreads) checks it between units of work,
 * finishes the unit in hand, collects every request it has in flight, and
 * returns. The host then waits for the kernel to end before closing the
 * loop (its queue and buffers stay mapped until then). */

/* Reads a word the host writes (a stop flag, a command). */
__device__ inline unsigned long long megaio_dev_load_host(const unsigned long long *p)
{
	return cuda::atomic_ref<unsigned long long, cuda::thread_scope_system>(*const_cast<unsigned long long *>(p))
	    .load(cuda::memory_order_acquire);
}

/* Writes a word the host reads (progress, a count of units done). Give
 * each writer a word of its own (per block, say) and let the host add them
 * up: a read-modify-write on host memory across PCIe (fetch_add with
 * system scope) is atomic only where the platform supports PCIe atomics,
 * and megaio's protocol uses none. */
__device__ inline void megaio_dev_store_host(unsigned long long *p, unsigned long long v)
{
	cuda::atomic_ref<unsigned long long, cuda::thread_scope_system>(*p).store(v, cuda::memory_order_release);
}

#endif /* MEGAIO_DEVICE_CUH */
