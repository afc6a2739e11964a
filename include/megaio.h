/*
 * megaio.h - the queue ABI shared by megaio producers (GPU threads, host
 * threads) and the megaio loop (a host thread that serves requests through
 * io_uring).
 *
 * Valid C11, C++11 and CUDA. This header is the contract: the Go package
 * mirrors every structure below and tests the layout against this file.
 *
 * ------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------
 * A queue is one page-aligned region of host memory (pinned and mapped for
 * the GPU by the loop's owner) laid out as
 *
 *     [ megaio_queue_header | capacity x megaio_request | capacity x megaio_completion ]
 *
 * at the offsets written in the header. Producers also own a "producer side"
 * (megaio_producer_side followed by capacity turn words). It lives in the
 * producers' own memory: device memory for a GPU kernel, host memory for host
 * threads. The loop never reads or writes it. A queue has exactly one producer
 * side: host threads and GPU threads must not both produce into one queue.
 *
 * ------------------------------------------------------------------------
 * Who writes what (every shared word has exactly one writer)
 * ------------------------------------------------------------------------
 * Nothing here relies on an atomic read-modify-write across PCIe: on x86 a
 * GPU atomic on mapped host memory is not atomic as seen by the host. The
 * only read-modify-write is the ticket counter, which is private to the
 * producer side (a GPU atomicAdd in device memory, or a host atomic in host
 * memory). Every shared word is plain-stored by one side and loaded by the
 * other, as in LLVM libc's GPU RPC ports.
 *
 *   header line 0 (config)   loop, once, before producers start; then read-only
 *   header line 1 (state)    loop
 *   request slot             producers: the issuer of the slot's current ticket
 *   completion               loop
 *   producer side            producers
 *
 * ------------------------------------------------------------------------
 * The protocol for ticket t (64-bit, wrapping arithmetic throughout)
 * ------------------------------------------------------------------------
 * slot s = t & (capacity - 1). "release"/"acquire" are system scope on a GPU
 * (cuda::atomic_ref<..., cuda::thread_scope_system> or a __threadfence_system
 * before a volatile store / after a volatile load).
 *
 * Producer (issuer of t)
 *   P1  t = fetch_add(&side->next_ticket, 1)           (producer-private RMW)
 *   P2  wait until acquire(turn[s]) == t                pairs with P6 of t - capacity
 *   P3  write op, file, dest, offsets, length, tag of slot s (plain stores)
 *   P4  release(slot[s].seq = t + 1)                    publishes; pairs with L1
 *   P5  wait until acquire(completion[s].done) == t + 1 pairs with L3;
 *       then read completion[s].result
 *   P6  release(turn[s] = t + capacity)                 hands the slot on
 *
 * Loop (claims in ticket order; head is the next ticket to claim)
 *   L1  if acquire(slot[head & mask].seq) == head + 1: copy the request out,
 *       head += 1 (the claim). Otherwise nothing new: an idle poll reads this
 *       one cache line and no other.
 *   L2  run the request (any order, any duration)
 *   L3  completion[s].result = bytes or -errno; release(completion[s].done = t + 1)
 *
 * Why a slot is reused only after its issuer has read the completion: ticket
 * t + capacity can write slot s only after P2 sees turn[s] == t + capacity,
 * which the issuer of t stores (P6) after reading the result (P5). The loop
 * writes completion[s] for t + capacity only after claiming it (L1), which
 * needs that ticket's publication (P4), which comes after its P2. So the
 * result of t is never overwritten before t's issuer has read it.
 *
 * Liveness. P2 waits for the issuer of t - capacity to collect (P5, P6). If
 * that issuer is itself waiting in P2 for a slot whose previous ticket is
 * one of yours that you have not collected, neither moves: a producer that
 * keeps several tickets in flight must not wait in P2 for long while it holds
 * completed, uncollected ones. Collect before publishing (the example kernel
 * waits for its current chunk before it publishes the next), or do what the
 * Go HostProducer does: when the previous ticket of the slot is complete,
 * collect it on its issuer's behalf with a compare-and-swap of turn[s] from
 * t - capacity to t, keep its result where the issuer will look, and go on.
 *
 * Why seq/done/turn compare for equality with full tickets: a stale value
 * from the previous lap is t + 1 - capacity, never t + 1, so no ABA is
 * possible while capacity <= 2^31. Initial values are those of a previous lap
 * that completed (see megaio_initial_seq), so a queue may start at any ticket,
 * e.g. just below 2^32 or 2^64 to test wrap-around.
 *
 * Stopping. The loop writes state = MEGAIO_STATE_STOPPED after it has
 * completed every request it claimed, with stop_head = the first ticket it did
 * not claim (stop_head stored before state, state with release). A producer
 * that sees STOPPED before taking a ticket must not take one (it would block
 * every later ticket); one that is waiting (P5) for ticket t >= stop_head
 * knows its request is published but unserved: it may stop waiting and poll
 * again later; its request is served when a loop starts on the queue again.
 * A producer that has taken a ticket always publishes it.
 *
 * Alternative designs considered: a single shared tail word written by many
 * producers would need a cross-PCIe RMW; scanning a bitmap of ready slots
 * would make an idle poll cost a scan. The ticket ring needs neither.
 */
#ifndef MEGAIO_H
#define MEGAIO_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
#define MEGAIO_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
extern "C" {
#else
#define MEGAIO_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define MEGAIO_MAGIC UINT64_C(0x3151454f4947454d) /* "MEGIOEQ1" read as little-endian bytes */
#define MEGAIO_ABI_VERSION 1u
#define MEGAIO_HEADER_SIZE 128u
#define MEGAIO_SLOT_SIZE 64u
#define MEGAIO_COMPLETION_SIZE 16u
#define MEGAIO_MIN_CAPACITY 2u
#define MEGAIO_MAX_CAPACITY (1u << 20)

/* Largest length of one READ or WRITE, in bytes (io_uring's largest
 * registered buffer is 1 GiB). Longer requests fail with -E2BIG. */
#define MEGAIO_MAX_LENGTH (UINT64_C(1) << 30)

/* Operations (megaio_request.op). */
enum {
	MEGAIO_OP_NOP = 0,   /* completes with 0 */
	MEGAIO_OP_READ = 1,  /* file[file_offset..+length) -> dest[dest_offset..+length) */
	MEGAIO_OP_WRITE = 2, /* dest[dest_offset..+length) -> file[file_offset..+length) */
	MEGAIO_OP_FENCE = 3, /* completes (with 0) only after every request claimed before it has completed */
	MEGAIO_OP_FSYNC = 4  /* fdatasync(file); dest, offsets and length are ignored */
};

/* Results are bytes transferred (>= 0) or a negative Linux errno. READ and
 * WRITE are continued after a short transfer until the full length or EOF, so
 * a result below length means EOF (or an error after some bytes moved: the
 * count is returned and the error shows on the next request). The errnos the
 * loop itself produces (the kernel may return others, e.g. -EIO): */
#define MEGAIO_EBADF 9      /* file handle not registered */
#define MEGAIO_ENXIO 6      /* destination handle not registered */
#define MEGAIO_EFAULT 14    /* destination range outside the destination */
#define MEGAIO_EINVAL 22    /* unknown op, nonzero flags or reserved field, zero length */
#define MEGAIO_E2BIG 7      /* length > MEGAIO_MAX_LENGTH */
#define MEGAIO_EOVERFLOW 75 /* file_offset + length beyond 2^63 - 1 */
#define MEGAIO_ECANCELED 125 /* claimed after Stop began, or cancelled at Stop's deadline */
#define MEGAIO_ESHUTDOWN 108 /* host producer API only: the queue is stopped */
#define MEGAIO_EIO 5        /* the loop's ring failed; see the loop's Err() */

enum {
	MEGAIO_STATE_OPEN = 0,   /* requests are (or will be, once a loop starts) served */
	MEGAIO_STATE_STOPPED = 1 /* a loop stopped; tickets >= stop_head are unserved */
};

typedef struct megaio_queue_header {
	/* Line 0, config: written by the loop's owner once, before producers
	 * attach; read-only afterwards. */
	uint64_t magic;              /* MEGAIO_MAGIC */
	uint32_t abi_version;        /* MEGAIO_ABI_VERSION */
	uint32_t header_size;        /* MEGAIO_HEADER_SIZE */
	uint32_t slot_size;          /* MEGAIO_SLOT_SIZE */
	uint32_t completion_size;    /* MEGAIO_COMPLETION_SIZE */
	uint32_t capacity;           /* slots; a power of two */
	uint32_t flags;              /* 0 */
	uint64_t first_ticket;       /* the ticket the producer side starts at */
	uint64_t slots_offset;       /* from the start of the queue, 64-aligned */
	uint64_t completions_offset; /* from the start of the queue, 64-aligned */
	uint64_t reserved0;

	/* Line 1, state: written by the loop, read by producers. */
	uint32_t state;     /* MEGAIO_STATE_*; stored with release after stop_head */
	uint32_t reserved1;
	uint64_t stop_head; /* valid when state == STOPPED */
	uint64_t reserved2[6];
} megaio_queue_header;

typedef struct megaio_request {
	uint64_t seq;         /* ticket + 1; stored last, with release (P4) */
	uint16_t op;          /* MEGAIO_OP_* */
	uint16_t flags;       /* must be 0 */
	uint32_t file;        /* file handle returned by the loop's RegisterFile */
	uint32_t dest;        /* destination handle returned by AddDestination */
	uint32_t reserved0;   /* must be 0 */
	uint64_t file_offset; /* bytes into the file */
	uint64_t dest_offset; /* bytes into the destination */
	uint64_t length;      /* bytes; 1 .. MEGAIO_MAX_LENGTH for READ/WRITE */
	uint64_t tag;         /* the producer's own; the loop ignores it */
	uint64_t reserved1;   /* must be 0 */
} megaio_request;

typedef struct megaio_completion {
	int64_t result; /* bytes or -errno; stored before done */
	uint64_t done;  /* ticket + 1; stored last, with release (L3) */
} megaio_completion;

/* The producer side; `capacity` turn words (uint64_t) follow it. */
typedef struct megaio_producer_side {
	uint64_t next_ticket; /* the producers' ticket counter (P1) */
	uint32_t capacity;
	uint32_t reserved0;
	uint64_t reserved1[6]; /* keeps the counter's line free of turn words */
} megaio_producer_side;

MEGAIO_STATIC_ASSERT(sizeof(megaio_queue_header) == MEGAIO_HEADER_SIZE, "header size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_queue_header, state) == 64, "state on its own line");
MEGAIO_STATIC_ASSERT(sizeof(megaio_request) == MEGAIO_SLOT_SIZE, "slot size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, seq) == 0, "seq first");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, op) == 8, "op");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, file) == 12, "file");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, dest) == 16, "dest");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, file_offset) == 24, "file_offset");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, dest_offset) == 32, "dest_offset");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, length) == 40, "length");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, tag) == 48, "tag");
MEGAIO_STATIC_ASSERT(sizeof(megaio_completion) == MEGAIO_COMPLETION_SIZE, "completion size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_completion, done) == 8, "done");
MEGAIO_STATIC_ASSERT(sizeof(megaio_producer_side) == 64, "producer side header");

/* A view of an attached queue: pointers valid in the address space of the
 * code that uses it (host pointers on the host, device pointers on a GPU). */
typedef struct megaio_queue {
	megaio_queue_header *header;
	megaio_request *slots;
	megaio_completion *completions;
	uint64_t mask; /* capacity - 1 */
} megaio_queue;

/* The value seq and done hold for slot s before any ticket used it: those of
 * the lap before first_ticket, as if it had completed. */
static inline uint64_t megaio_first_ticket_of_slot(uint64_t first_ticket, uint64_t capacity, uint64_t s)
{
	return first_ticket + ((s - first_ticket) & (capacity - 1));
}
static inline uint64_t megaio_initial_seq(uint64_t first_ticket, uint64_t capacity, uint64_t s)
{
	return megaio_first_ticket_of_slot(first_ticket, capacity, s) - capacity + 1;
}

static inline size_t megaio_queue_size(uint32_t capacity)
{
	return MEGAIO_HEADER_SIZE + (size_t)capacity * (MEGAIO_SLOT_SIZE + MEGAIO_COMPLETION_SIZE);
}
static inline size_t megaio_producer_side_size(uint32_t capacity)
{
	return sizeof(megaio_producer_side) + (size_t)capacity * sizeof(uint64_t);
}
static inline uint64_t *megaio_turns(megaio_producer_side *p)
{
	return (uint64_t *)(p + 1);
}

#if !defined(__CUDA_ARCH__)
/* ------------------------------------------------------------------------
 * Host-side producer functions (plain C; GCC/Clang atomics). The device-side
 * equivalents live in megaio_device.cuh.
 * ------------------------------------------------------------------------ */

#if defined(__x86_64__) || defined(__i386__)
#define MEGAIO_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define MEGAIO_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define MEGAIO_CPU_RELAX() ((void)0)
#endif
#define MEGAIO_LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define MEGAIO_STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Checks a queue's header and fills a view. Returns 0 or -MEGAIO_EINVAL when
 * the magic, version, sizes or capacity do not match this header. */
static inline int megaio_attach(void *mem, size_t len, megaio_queue *q)
{
	megaio_queue_header *h = (megaio_queue_header *)mem;
	if (len < MEGAIO_HEADER_SIZE || h->magic != MEGAIO_MAGIC || h->abi_version != MEGAIO_ABI_VERSION ||
	    h->header_size != MEGAIO_HEADER_SIZE || h->slot_size != MEGAIO_SLOT_SIZE ||
	    h->completion_size != MEGAIO_COMPLETION_SIZE || h->capacity < MEGAIO_MIN_CAPACITY ||
	    h->capacity > MEGAIO_MAX_CAPACITY || (h->capacity & (h->capacity - 1)) != 0 ||
	    len < megaio_queue_size(h->capacity))
		return -MEGAIO_EINVAL;
	q->header = h;
	q->slots = (megaio_request *)((char *)mem + h->slots_offset);
	q->completions = (megaio_completion *)((char *)mem + h->completions_offset);
	q->mask = h->capacity - 1;
	return 0;
}

/* Initialises a producer side for q. Call once, before any producer runs. */
static inline void megaio_producer_side_init(megaio_producer_side *p, const megaio_queue *q)
{
	uint64_t cap = q->mask + 1, s;
	p->next_ticket = q->header->first_ticket;
	p->capacity = (uint32_t)cap;
	for (s = 0; s < cap; s++)
		megaio_turns(p)[s] = megaio_first_ticket_of_slot(q->header->first_ticket, cap, s);
}

/* Takes a ticket, waits for the slot's turn, fills and publishes it (P1-P4).
 * The seq field of *req is ignored. Returns 0 with *ticket set, or
 * -MEGAIO_ESHUTDOWN (no ticket taken) when the queue is stopped. */
static inline int megaio_host_submit(const megaio_queue *q, megaio_producer_side *p, const megaio_request *req,
				     uint64_t *ticket)
{
	uint64_t t, s;
	megaio_request *slot;
	if (MEGAIO_LOAD_ACQ(&q->header->state) == MEGAIO_STATE_STOPPED)
		return -MEGAIO_ESHUTDOWN;
	t = __atomic_fetch_add(&p->next_ticket, 1, __ATOMIC_RELAXED);
	s = t & q->mask;
	while (MEGAIO_LOAD_ACQ(&megaio_turns(p)[s]) != t)
		MEGAIO_CPU_RELAX();
	slot = &q->slots[s];
	slot->op = req->op;
	slot->flags = req->flags;
	slot->file = req->file;
	slot->dest = req->dest;
	slot->reserved0 = req->reserved0;
	slot->file_offset = req->file_offset;
	slot->dest_offset = req->dest_offset;
	slot->length = req->length;
	slot->tag = req->tag;
	slot->reserved1 = req->reserved1;
	MEGAIO_STORE_REL(&slot->seq, t + 1);
	*ticket = t;
	return 0;
}

/* Polls ticket t once (P5, P6). Returns 1 with *result set (the slot is handed
 * on: do not poll t again), 0 if pending, or -MEGAIO_ESHUTDOWN if the loop
 * stopped without claiming t (the request stays published; poll again after a
 * loop starts on the queue). */
static inline int megaio_host_poll(const megaio_queue *q, megaio_producer_side *p, uint64_t t, int64_t *result)
{
	uint64_t s = t & q->mask;
	if (MEGAIO_LOAD_ACQ(&q->completions[s].done) == t + 1) {
		*result = q->completions[s].result;
		MEGAIO_STORE_REL(&megaio_turns(p)[s], t + q->mask + 1);
		return 1;
	}
	if (MEGAIO_LOAD_ACQ(&q->header->state) == MEGAIO_STATE_STOPPED) {
		uint64_t stop_head = q->header->stop_head;
		/* Re-check done: the loop stores done before it stops. */
		if (MEGAIO_LOAD_ACQ(&q->completions[s].done) != t + 1 && (int64_t)(t - stop_head) >= 0)
			return -MEGAIO_ESHUTDOWN;
	}
	return 0;
}

/* Waits for ticket t. Returns 1 with *result set, or -MEGAIO_ESHUTDOWN. */
static inline int megaio_host_wait(const megaio_queue *q, megaio_producer_side *p, uint64_t t, int64_t *result)
{
	int r;
	while ((r = megaio_host_poll(q, p, t, result)) == 0)
		MEGAIO_CPU_RELAX();
	return r;
}
#endif /* !__CUDA_ARCH__ */

#ifdef __cplusplus
}
#endif
#endif /* MEGAIO_H */
