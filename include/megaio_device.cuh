/*
 * megaio_device.cuh - the device half of the megaio queue protocol, for
 * CUDA kernels. The protocol, its words and their writers are described in
 * megaio.h; the step names P1..P6 below refer to it.
 *
 * Memory: the queue (header, slots, completions) is host memory registered
 * with cuMemHostRegister(DEVICEMAP) and read through its device address; the
 * producer side (ticket counter and turn words) is device memory that only
 * GPU threads touch. So:
 *   - the ticket counter is a device-scope atomicAdd in device memory (the
 *     only read-modify-write in the protocol, and it never crosses PCIe);
 *   - turn words are device-scope loads and stores in device memory;
 *   - seq (published by us, read by the host loop) and done/result (written
 *     by the loop, read by us) are system-scope release stores and acquire
 *     loads on mapped host memory: plain 8-byte accesses across PCIe, never
 *     read-modify-writes, which PCIe does not make atomic for the host.
 *
 * Destinations may be device memory (Loop.NewDeviceBuffer): the loop
 * publishes done only after the bytes are there (the bounce path's copy
 * completed, or GPUDirect Storage reported the IO). Read a region reused for
 * successive requests with volatile loads or __ldcg: DMA writes do not
 * invalidate lines an SM's L1 cached from the region's previous contents.
 *
 * Requires CUDA 11 or newer (libcu++'s cuda::atomic_ref) and sm_70 or newer
 * (__nanosleep, and the acquire/release instructions).
 */
#ifndef MEGAIO_DEVICE_CUH
#define MEGAIO_DEVICE_CUH

#include <cuda/atomic>

#include "megaio.h"

/* A device-side view of a queue and its producer side. */
struct megaio_dev_queue {
	megaio_request *slots;          /* mapped host memory */
	megaio_completion *completions; /* mapped host memory */
	megaio_queue_header *header;    /* mapped host memory */
	megaio_producer_side *side;     /* device memory */
	uint64_t *turns;                /* device memory, capacity words */
	uint64_t mask;                  /* capacity - 1 */
};

/* uint64_t (unsigned long on Linux), the type of the ABI's words. */
using megaio_sys_u64 = cuda::atomic_ref<uint64_t, cuda::thread_scope_system>;
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
	q.turns = (uint64_t *)(q.side + 1);
	q.mask = q.header->capacity - 1;
	return q;
}

/* P1: a ticket from the producers' counter (device memory). */
__device__ inline unsigned long long megaio_dev_take_ticket(const megaio_dev_queue &q)
{
	return atomicAdd((unsigned long long *)&q.side->next_ticket, 1ULL);
}

/* P2-P4: waits for the slot's turn, fills it and publishes it. The seq
 * field of *req is ignored.
 *
 * Liveness (megaio.h, "Liveness"): P2 waits for the issuer of
 * t - capacity. A thread or block that keeps several tickets in flight must
 * collect (megaio_dev_wait) every completed ticket it holds before it
 * publishes another, as megaio_checksum in csrc/gpu/megakernel.cu does;
 * otherwise two producers can each wait in P2 for a slot the other holds.
 * This header has no collect-on-behalf: queue ABI v2 removes the rule from
 * the contract instead. */
__device__ inline void megaio_dev_publish(const megaio_dev_queue &q, unsigned long long t, const megaio_request &req)
{
	unsigned long long s = t & q.mask;
	/* P2: acquire pairs with the release in megaio_dev_collect (P6) of
	 * ticket t - capacity, so its reads of the slot's completion happen
	 * before our writes to the slot. Device scope: only GPU threads write
	 * turn words. */
	unsigned ns = 32;
	while (megaio_dev_u64(q.turns[s]).load(cuda::memory_order_acquire) != (uint64_t)t) {
		__nanosleep(ns);
		ns = ns < 2048 ? 2 * ns : ns;
	}
	megaio_request *slot = &q.slots[s];
	/* P3: plain stores; nothing reads them until seq says so. */
	slot->op = req.op;
	slot->flags = req.flags;
	slot->file = req.file;
	slot->dest = req.dest;
	slot->reserved0 = 0;
	slot->file_offset = req.file_offset;
	slot->dest_offset = req.dest_offset;
	slot->length = req.length;
	slot->tag = req.tag;
	slot->reserved1 = 0;
	/* P4: system-scope release: every store above is visible to the host
	 * before seq is, and the loop's acquire load of seq (L1) pairs with it.
	 * A plain store (st.release.sys), not a read-modify-write. */
	megaio_sys_u64(slot->seq).store((uint64_t)(t + 1), cuda::memory_order_release);
}

/* P5: non-blocking check; returns true with *result set when done. */
__device__ inline bool megaio_dev_poll(const megaio_dev_queue &q, unsigned long long t, long long *result)
{
	megaio_completion *c = &q.completions[t & q.mask];
	/* Acquire pairs with the loop's release store of done (L3): the result
	 * read after it is the one written for t. System scope: the host wrote
	 * it. */
	if (megaio_sys_u64(c->done).load(cuda::memory_order_acquire) != (uint64_t)(t + 1))
		return false;
	*result = *(volatile long long *)&c->result;
	return true;
}

/* P6: hands the slot on to ticket t + capacity; call after reading the
 * result. Release pairs with the acquire in megaio_dev_publish (P2). */
__device__ inline void megaio_dev_collect(const megaio_dev_queue &q, unsigned long long t)
{
	megaio_dev_u64(q.turns[t & q.mask]).store((uint64_t)(t + q.mask + 1), cuda::memory_order_release);
}

/* Whether the loop has stopped without claiming ticket t, read as
 * megaio_host_poll reads it: state with acquire (it pairs with the loop's
 * release store of state, made after stop_head and after every claimed
 * ticket's done), then stop_head. Both are system-scope acquire loads of
 * mapped host memory: a relaxed or volatile load may return a stop_head older
 * than the state it was read with. */
__device__ inline bool megaio_dev_stopped_before(const megaio_dev_queue &q, unsigned long long t)
{
	cuda::atomic_ref<uint32_t, cuda::thread_scope_system> state(q.header->state);
	if (state.load(cuda::memory_order_acquire) != MEGAIO_STATE_STOPPED)
		return false;
	uint64_t stop_head = megaio_sys_u64(q.header->stop_head).load(cuda::memory_order_acquire);
	return (long long)(t - stop_head) >= 0;
}

/* P5-P6: waits for ticket t's result (with __nanosleep backoff, so a
 * waiting warp leaves the SM's issue slots to others), hands the slot on
 * and returns the result: bytes moved or a negative errno. It returns
 * -MEGAIO_ESHUTDOWN if the loop stopped without claiming t (the request
 * stays published and its turn is kept: call again, once a loop runs on the
 * queue, to keep waiting).
 *
 * Like megaio_host_poll it re-checks done after seeing STOPPED: the loop
 * stores the done of every ticket it claimed before it stores state, so a
 * done that the first poll missed is seen by the second, and a served
 * ticket is never reported as unserved (its turn would then never be handed
 * on, and every later lap of its slot would hang). */
__device__ inline long long megaio_dev_wait(const megaio_dev_queue &q, unsigned long long t)
{
	long long result;
	unsigned ns = 64;
	while (!megaio_dev_poll(q, t, &result)) {
		if (megaio_dev_stopped_before(q, t)) {
			if (megaio_dev_poll(q, t, &result))
				break;
			return -MEGAIO_ESHUTDOWN;
		}
		__nanosleep(ns);
		ns = ns < 4096 ? 2 * ns : ns;
	}
	megaio_dev_collect(q, t);
	return result;
}

/* One request from one thread: take a ticket, publish, wait. */
__device__ inline long long megaio_dev_request(const megaio_dev_queue &q, const megaio_request &req)
{
	unsigned long long t = megaio_dev_take_ticket(q);
	megaio_dev_publish(q, t, req);
	return megaio_dev_wait(q, t);
}

/* The calling thread's lane in its warp (%laneid). In a 2-D or 3-D block
 * threadIdx.x % 32 is not the lane: warps are cut from the linear thread
 * index x + y*Dx + z*Dx*Dy. */
__device__ inline unsigned megaio_lane_id()
{
	unsigned lane;
	asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
	return lane;
}

/* Warp-level variant: every active lane calls it; the lowest active lane
 * publishes req (its own copy) for the warp and the result is broadcast to
 * all. One request per warp keeps 32x fewer slots busy when a warp reads a
 * chunk together. Works for any block shape. */
__device__ inline long long megaio_warp_request(const megaio_dev_queue &q, const megaio_request &req)
{
	unsigned active = __activemask();
	int leader = __ffs(active) - 1;
	long long result = 0;
	if ((int)megaio_lane_id() == leader)
		result = megaio_dev_request(q, req);
	return __shfl_sync(active, result, leader);
}

#endif /* MEGAIO_DEVICE_CUH */
