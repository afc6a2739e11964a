/*
 * megaio.h - the queue ABI shared by megaio producers (GPU threads, host
 * threads) and the megaio loop (a host thread that serves requests through
 * io_uring). This is ABI version 2.
 *
 * Valid C11, C++11 and CUDA. This header is the contract: the Go package
 * mirrors every structure below and tests the layout against this file.
 *
 * ------------------------------------------------------------------------
 * The shape, in one paragraph
 * ------------------------------------------------------------------------
 * Producers put requests into a ring of slots; the loop copies each request
 * out (claims it) in ticket order and says how far it got in one word,
 * claim_head. A slot is free again as soon as the loop has claimed it,
 * whatever then happens to the IO. Each request names a completion id, an
 * index into a table of completions whose size is set when the queue is
 * made, independent of the ring's. The loop writes the result there, and
 * only the request's issuer reads it and reuses the id. So a slow request
 * holds one completion id (its issuer's) and one of the loop's records,
 * never a slot, and no producer ever waits for another producer. This is
 * how NVMe queues work: an entry is free once the controller fetched it,
 * and a completion names its command by an identifier the host chose.
 *
 * ------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------
 * A queue is one page-aligned region of host memory (pinned and mapped for
 * the GPU by the loop's owner) laid out as
 *
 *     [ megaio_queue_header | capacity x megaio_request | completions x megaio_completion ]
 *
 * at the offsets written in the header. Producers also own a "producer side"
 * (megaio_producer_side: the ticket counter and a cached copy of claim_head).
 * It lives in the producers' own memory: device memory for a GPU kernel, host
 * memory for host threads. The loop never reads or writes it. A queue has one
 * producer side: host threads and GPU threads must not both produce into one
 * queue (their counters would hand out the same tickets).
 *
 * C producers beside a Go one: when the queue's host producer side belongs
 * to a Go HostProducer, C code on host threads may produce into the same
 * queue through it. The side's memory is HostProducer.Memory() (a
 * megaio_producer_side; do not call megaio_producer_side_init on it), and
 * the C code must name only completion ids the Go side reserved for it:
 * HostProducer.ReserveCompletions(n) returns n ids Submit will not hand out
 * until ReleaseCompletions gives them back. Ids chosen any other way may be
 * named by a Go request in flight at the same time (see "Why a result is
 * never overwritten" below).
 *
 * ------------------------------------------------------------------------
 * Who writes what (every shared word has one writer at a time)
 * ------------------------------------------------------------------------
 * Nothing here relies on an atomic read-modify-write across PCIe: on x86 a
 * GPU atomic on mapped host memory is not atomic as seen by the host. The
 * only read-modify-writes are on the producer side, which is private to the
 * producers (device memory for a GPU, host memory for host threads). Every
 * shared word is plain-stored by one side and loaded by the other, as in
 * LLVM libc's GPU RPC ports.
 *
 *   header line 0 (config)     loop's owner, once, before producers start
 *   header line 1 (state)      loop, when it starts and stops
 *   header line 2 (claim_head) loop, as its claims advance (L1)
 *   header line 3 (diagnosis)  loop: requests it could not complete
 *   request slot s             the producer holding the slot's ticket, until
 *                              it publishes (P4); then nobody writes it until
 *                              the loop's claim_head passes it
 *   completion c               loop, between a request naming c being claimed
 *                              and its result being stored (L3); otherwise
 *                              nobody: the issuer that named c only reads it
 *   producer side              producers (atomics in their own memory)
 *
 * ------------------------------------------------------------------------
 * The protocol for ticket t (64-bit, wrapping arithmetic throughout)
 * ------------------------------------------------------------------------
 * slot s = t & (capacity - 1); c is the completion id the issuer chose.
 * "release"/"acquire" are system scope on a GPU (cuda::atomic_ref<...,
 * cuda::thread_scope_system>, or a __threadfence_system before a volatile
 * store / after a volatile load). "Full" below means t - claim_head >=
 * capacity, compared as a signed 64-bit difference.
 *
 * Producer (issuer of t)
 *   P1  t = next_ticket; if full, seen = acquire(claim_head) (and raise the
 *       side's cached copy to it); if still full, the ring is full: give up
 *       (try-submit) or back off and retry. Otherwise compare-and-swap
 *       next_ticket from t to t + 1 (producer-private; retry on failure).
 *       The ticket is taken only when its slot is already free.
 *   P2  (none: v1 waited here for the previous issuer of the slot)
 *   P3  write op, file, dest, completion = c, offsets, length, tag of slot s
 *       (plain stores; no one else writes or reads the slot now)
 *   P4  release(slot[s].seq = t + 1)                    publishes; pairs with L1
 *   P5  wait until acquire(completion[c].done) == t + 1 pairs with L3;
 *       then read completion[c].result. The id c is free again: the issuer
 *       may name it in its next request at once.
 *
 * Loop (claims in ticket order; head is the next ticket to claim)
 *   L1  if acquire(slot[head & mask].seq) == head + 1: copy the request out,
 *       head += 1. Otherwise nothing new: an idle poll reads this one cache
 *       line and no other. Then release(claim_head = head), which frees the
 *       slots claimed, whenever a quarter of the ring was claimed since the
 *       last such store, or a poll found nothing new. (A producer that sees
 *       the ring full waits at most until the loop has claimed a quarter of
 *       it, or caught up.)
 *   L2  run the request (any order, any duration)
 *   L3  completion[c].result = bytes or -errno; release(completion[c].done = t + 1)
 *
 * Why a slot is never overwritten before the loop read it: ticket t may be
 * taken (P1) only once the producer has seen claim_head > t - capacity, by
 * an acquire that pairs with the loop's release of that claim_head (or by
 * acquiring the cached copy a producer stored with release after such an
 * acquire: happens-before is transitive). The loop stored claim_head after
 * copying ticket t - capacity out of slot s, so that copy happens before the
 * new ticket's writes (P3). The compare-and-swap hands each ticket to exactly
 * one producer, so slot s has one writer at a time.
 *
 * Why a result is never overwritten before its issuer read it: the loop
 * writes completion c only for a request that names c, and only the issuer
 * that last named c may name it again, after reading its result (P5).
 *
 * Two requests in flight naming one completion id are a producer error the
 * loop cannot see (it would have to remember every id in flight). What
 * happens then: both requests are run; the loop does not crash and no
 * other id's completion is touched; c's done ends as ticket + 1 of
 * whichever of the two the loop completed last, which need not be the
 * later ticket (done may go to t1 + 1 and then back to t0 + 1), and its
 * result is that request's. What is not guaranteed: that either issuer
 * sees its own done (one may wait forever, or until Stop), or that a result
 * read after seeing done belongs to that done's request (the other
 * completion may land in between). Give every thread (or warp) ids of its
 * own, e.g. id = thread * k + j for a thread keeping k requests in flight
 * (megaio_device.cuh has helpers).
 *
 * No ABA: seq and done compare for equality with full 64-bit tickets. A
 * slot's stale seq is at most t + 1 - capacity; a completion's stale done is
 * an older ticket of the same id, or first_ticket (the initial value, as if
 * ticket first_ticket - 1 had completed everywhere). Both differ from t + 1
 * until 2^64 tickets have passed. Capacity is at most 2^20, so the signed
 * differences of P1 never overflow. A queue may start at any ticket, e.g.
 * just below 2^32 or 2^64 to test wrap-around.
 *
 * A wait never depends on another producer collecting anything: P1 waits
 * only for the loop to claim (it claims every published request, in order,
 * while it runs), P5 only for the loop to complete. The one thing a producer
 * may wait on from another is the few plain stores between that producer's
 * P1 and P4: the loop claims in ticket order, so a host thread descheduled
 * right after taking its ticket delays the claims behind it until it runs
 * again. It waits for nothing itself, so it always gets there. Waits should
 * back off: spin a little, then yield (on a host) or __nanosleep (on a GPU),
 * so more producers than cores do not starve the loop.
 *
 * ------------------------------------------------------------------------
 * What the loop does with what it claims
 * ------------------------------------------------------------------------
 * The loop validates every field a producer wrote. A request whose
 * completion id is outside the table cannot be answered: the loop runs
 * nothing for it, counts it (header line 3 and the loop's statistics) and
 * goes on; its issuer, which broke the contract, never sees a result. The
 * producer functions below and in megaio_device.cuh refuse such an id before
 * publishing. Every other fault is answered in the request's completion, and
 * when a request breaks several rules, the first of this list wins (the
 * kernel's own errors come after, below):
 *   -EIO        the loop's ring has failed (the loop's Err says why)
 *   -ECANCELED  claimed after Stop began, or cancelled at Stop's deadline
 *   -EINVAL     nonzero flags or reserved field, or an unknown op
 *   -EBADF      file handle not registered (READ, WRITE, FSYNC)
 *   -ENXIO      destination handle not registered (READ, WRITE); handles
 *               from 2^31 up are the loop owner's own (a Go Client's
 *               callers' memory, one call at a time) and -ENXIO in any
 *               other queue
 *   -EINVAL     length 0 (READ, WRITE)
 *   -E2BIG      length > MEGAIO_MAX_LENGTH
 *   -EOVERFLOW  file_offset + length beyond 2^63 - 1
 *   -EFAULT     dest_offset + length beyond the destination
 * Errors from the kernel come in the result as they are, e.g.:
 *   -EINVAL     a READ or WRITE of a file opened with O_DIRECT whose
 *               file_offset, length or place in a host destination is not
 *               a multiple of the file's logical block size (often 512 or
 *               4096); device destinations are split by the loop instead
 *   -EIO, -ENOSPC, -EFBIG ... what the file system says
 * NOP and FENCE ignore file, dest, offsets, length and tag (they are not
 * checked; reserved fields and flags are); FSYNC ignores dest, offsets and
 * length. A loop holds a bounded number of requests at once (its records);
 * when they are all taken it keeps claiming into a bounded list in its own
 * memory, so the slots are freed anyway, and only when that list is full too
 * do requests wait in the ring, where P1 sees it full.
 *
 * Several queues: one loop may serve several queues (one per GPU, say). Each
 * keeps its own ring, producer side, completion table, header and state;
 * nothing in this protocol involves another queue, and the loop shares its
 * records out round the queues, so a queue that floods delays another's
 * requests by at most one record per queue. File and destination handles
 * are the loop's and mean the same in every queue it serves. A FENCE orders
 * only its own queue: requests of other queues are neither waited for nor
 * held back by it.
 *
 * Short transfers: READ and WRITE are continued after a short transfer
 * until the full length or EOF. A result below length means EOF, or an error
 * after some bytes moved: the count is returned, and the error itself is not
 * reported; the next request that touches the same place gets it afresh
 * from the kernel. A short O_DIRECT READ at EOF may change the destination
 * past its result: the kernel transfers whole logical blocks and zero-fills
 * from EOF on, up to the request's length. Do not keep data there that must
 * survive such a read.
 *
 * ------------------------------------------------------------------------
 * Stopping
 * ------------------------------------------------------------------------
 * The loop writes state = MEGAIO_STATE_STOPPED after it has completed every
 * request it claimed, with claim_head = the first ticket it did not claim
 * (claim_head stored before state, state with release). Requests published
 * after that are not lost: they stay in the ring and are served when a loop
 * starts on the queue again. Requests claimed after Stop began, and those
 * waiting in the loop for a record, complete with -ECANCELED.
 *
 * What producers see:
 *   - Host producers (megaio_host_*) read state on every take: one that
 *     sees STOPPED takes no ticket and gets -MEGAIO_ESHUTDOWN. GPU
 *     producers (megaio_device.cuh) read nothing across PCIe while the ring
 *     has room, so they look at state only when it is full: into a stopped
 *     queue with room they publish, and the request waits for the next loop.
 *   - A producer waiting for ring space (P1) while the loop stops gets one
 *     of two answers. If the ring is still full when it sees STOPPED:
 *     -MEGAIO_ESHUTDOWN, no ticket taken. But Stop's final sweep claims
 *     what is published before STOPPED is stored, and so frees slots: a
 *     waiter that finds room then takes a ticket, and its request is either
 *     claimed by the sweep (its result is -ECANCELED) or, published after
 *     the sweep, left for the next loop (as below).
 *   - One waiting (P5) for ticket t >= claim_head knows its request is
 *     published but unserved: it may stop waiting and poll again later, and
 *     its completion id stays reserved for that request until it is served.
 * So across a stop a producer's request ends as served (its result), as
 * -ECANCELED (claimed by the sweep), or stays published for the next loop;
 * a request the loop served is never answered -MEGAIO_ESHUTDOWN.
 *
 * A stop with a deadline. The host may give Stop a deadline. When it
 * passes, the loop cancels what it can: requests not yet handed to the
 * kernel, and requests the kernel can interrupt (a read of a pipe or
 * socket, a worker thread blocked in a read), complete with -ECANCELED or
 * the bytes moved so far. Requests already at a device cannot be
 * cancelled (a deep queue of O_DIRECT reads drains at the disk's pace),
 * nor can a wait the kernel does not interrupt (a hung network or FUSE
 * file system). If such requests outlast a grace period, the host's Stop
 * returns early (ErrStopIncomplete in the Go API) and the loop is still
 * stopping, not stopped:
 *   - those requests run to their end: their destinations may still change
 *     until each one's done is written, with its real result;
 *   - state stays RUNNING: requests published meanwhile are claimed and
 *     completed with -ECANCELED, by host and GPU producers alike;
 *   - state becomes STOPPED, as above, once the last of them is out.
 * So a producer never needs to know how the host stopped: the rules above
 * hold, and a destination is quiet once every request that names it has
 * its done.
 *
 * ------------------------------------------------------------------------
 * Designs considered
 * ------------------------------------------------------------------------
 * ABI v1 completed into the slot itself and handed the slot to ticket
 * t + capacity only after t's issuer collected it: one slow request stalled
 * every producer a lap later, and producers holding several tickets could
 * wait on each other forever. A single shared tail word written by many
 * producers would need a cross-PCIe RMW; scanning a bitmap of ready slots
 * would make an idle poll cost a scan. Taking a ticket with fetch-add and
 * then waiting for the slot to be claimed would also work, but a producer
 * could then hold a ticket it cannot publish (when the loop stops), and no
 * try-submit could exist; the compare-and-swap takes a ticket only when it
 * can be published at once.
 */
#ifndef MEGAIO_H
#define MEGAIO_H

#include <stdint.h>
#include <stddef.h>

/* The inline helpers below serve host code and, under nvcc, device code. */
#ifdef __CUDACC__
#define MEGAIO_HD __host__ __device__
#else
#define MEGAIO_HD
#endif

#ifdef __cplusplus
#define MEGAIO_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
extern "C" {
#else
#define MEGAIO_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define MEGAIO_MAGIC UINT64_C(0x3251454f4947454d) /* "MEGIOEQ2" read as little-endian bytes */
#define MEGAIO_ABI_VERSION 2u
#define MEGAIO_HEADER_SIZE 256u
#define MEGAIO_SLOT_SIZE 64u
#define MEGAIO_COMPLETION_SIZE 16u
#define MEGAIO_MIN_CAPACITY 2u
#define MEGAIO_MAX_CAPACITY (1u << 20)
#define MEGAIO_MAX_COMPLETIONS (1u << 24)

/* Largest length of one READ or WRITE, in bytes (io_uring's largest
 * registered buffer is 1 GiB). Longer requests fail with -E2BIG. */
#define MEGAIO_MAX_LENGTH (UINT64_C(1) << 30)

/* Operations (megaio_request.op). */
enum {
	MEGAIO_OP_NOP = 0,   /* completes with 0 */
	MEGAIO_OP_READ = 1,  /* file[file_offset..+length) -> dest[dest_offset..+length) */
	MEGAIO_OP_WRITE = 2, /* dest[dest_offset..+length) -> file[file_offset..+length) */
	MEGAIO_OP_FENCE = 3, /* completes (with 0) only after every request of this queue claimed before it has completed */
	MEGAIO_OP_FSYNC = 4  /* fdatasync(file); dest, offsets and length are ignored */
};

/* Results are bytes transferred (>= 0) or a negative Linux errno (see "What
 * the loop does with what it claims" above). The errnos the loop itself
 * produces (the kernel may return others, e.g. -EIO): */
#define MEGAIO_EBADF 9      /* file handle not registered */
#define MEGAIO_ENXIO 6      /* destination handle not registered */
#define MEGAIO_EFAULT 14    /* destination range outside the destination */
#define MEGAIO_EINVAL 22    /* unknown op, nonzero flags or reserved field, zero length; from the kernel: unaligned O_DIRECT IO */
#define MEGAIO_E2BIG 7      /* length > MEGAIO_MAX_LENGTH */
#define MEGAIO_EOVERFLOW 75 /* file_offset + length beyond 2^63 - 1 */
#define MEGAIO_ECANCELED 125 /* claimed after Stop began, or cancelled at Stop's deadline */
#define MEGAIO_ESHUTDOWN 108 /* producer functions only: the queue is stopped */
#define MEGAIO_EIO 5        /* the loop's ring failed; see the loop's Err() */
#define MEGAIO_EAGAIN 11    /* producer functions only: the ring is full (try-submit) */

enum {
	MEGAIO_STATE_OPEN = 0,   /* requests are (or will be, once a loop starts) served */
	MEGAIO_STATE_STOPPED = 1 /* a loop stopped; tickets >= claim_head are unserved */
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
	uint32_t completions;        /* completion ids: 1 .. MEGAIO_MAX_COMPLETIONS */
	uint64_t first_ticket;       /* the ticket the producer side starts at */
	uint64_t slots_offset;       /* from the start of the queue, 64-aligned */
	uint64_t completions_offset; /* from the start of the queue, 64-aligned */
	uint32_t flags;              /* 0 */
	uint32_t reserved0;

	/* Line 1, state: written by the loop when it starts and stops; read by
	 * host producers on every submit, so it changes rarely. */
	uint32_t state; /* MEGAIO_STATE_*; stored with release after claim_head */
	uint32_t reserved1;
	uint64_t reserved2[7];

	/* Line 2, the claim head: written by the loop after each batch of
	 * claims; read by producers only when their cached copy says the ring
	 * is full. */
	uint64_t claim_head; /* every ticket below it was claimed; stored with release */
	uint64_t reserved4[7];

	/* Line 3, diagnosis: written by the loop, read by people. */
	uint64_t bad_ids;      /* requests dropped for a completion id >= completions */
	uint64_t last_bad_seq; /* the seq (ticket + 1) of the last of them; 0 if none */
	uint64_t reserved3[6];
} megaio_queue_header;

typedef struct megaio_request {
	uint64_t seq;         /* ticket + 1; stored last, with release (P4) */
	uint16_t op;          /* MEGAIO_OP_* */
	uint16_t flags;       /* must be 0 */
	uint32_t file;        /* file handle returned by the loop's RegisterFile */
	uint32_t dest;        /* destination handle returned by AddDestination */
	uint32_t completion;  /* completion id: where the loop writes the result */
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

/* The producer side: the producers' own memory. */
typedef struct megaio_producer_side {
	uint64_t next_ticket; /* the next ticket (P1); taken by compare-and-swap */
	uint32_t capacity;
	uint32_t completions;
	uint64_t reserved0[6];
	uint64_t claim_seen; /* a claim_head the producers saw; only grows (P1) */
	uint64_t reserved1[7]; /* keeps the counter's line free of it */
} megaio_producer_side;

MEGAIO_STATIC_ASSERT(sizeof(megaio_queue_header) == MEGAIO_HEADER_SIZE, "header size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_queue_header, state) == 64, "state on its own line");
MEGAIO_STATIC_ASSERT(offsetof(megaio_queue_header, claim_head) == 128, "claim_head on its own line");
MEGAIO_STATIC_ASSERT(offsetof(megaio_queue_header, bad_ids) == 192, "diagnosis on its own line");
MEGAIO_STATIC_ASSERT(sizeof(megaio_request) == MEGAIO_SLOT_SIZE, "slot size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, seq) == 0, "seq first");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, op) == 8, "op");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, file) == 12, "file");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, dest) == 16, "dest");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, completion) == 20, "completion");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, file_offset) == 24, "file_offset");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, dest_offset) == 32, "dest_offset");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, length) == 40, "length");
MEGAIO_STATIC_ASSERT(offsetof(megaio_request, tag) == 48, "tag");
MEGAIO_STATIC_ASSERT(sizeof(megaio_completion) == MEGAIO_COMPLETION_SIZE, "completion size");
MEGAIO_STATIC_ASSERT(offsetof(megaio_completion, done) == 8, "done");
MEGAIO_STATIC_ASSERT(offsetof(megaio_producer_side, claim_seen) == 64, "claim_seen on its own line");
MEGAIO_STATIC_ASSERT(sizeof(megaio_producer_side) == 128, "producer side");

/* A view of an attached queue: pointers valid in the address space of the
 * code that uses it (host pointers on the host, device pointers on a GPU). */
typedef struct megaio_queue {
	megaio_queue_header *header;
	megaio_request *slots;
	megaio_completion *completions;
	uint64_t mask;        /* capacity - 1 */
	uint32_t ncompletions; /* completion ids */
} megaio_queue;

/* The seq slot s holds before any ticket used it: that of the lap before
 * first_ticket, as if it had been claimed. */
static inline MEGAIO_HD uint64_t megaio_initial_seq(uint64_t first_ticket, uint64_t capacity, uint64_t s)
{
	return first_ticket + ((s - first_ticket) & (capacity - 1)) - capacity + 1;
}
/* The done every completion holds before any ticket used it: first_ticket,
 * as if ticket first_ticket - 1 had completed there. */
static inline MEGAIO_HD uint64_t megaio_initial_done(uint64_t first_ticket) { return first_ticket; }

static inline MEGAIO_HD size_t megaio_queue_size(uint32_t capacity, uint32_t completions)
{
	return MEGAIO_HEADER_SIZE + (size_t)capacity * MEGAIO_SLOT_SIZE + (size_t)completions * MEGAIO_COMPLETION_SIZE;
}

/* Whether ticket t finds the ring full, given a claim_head: a signed
 * difference, so a stale t (below claim_head) is never "full". */
static inline MEGAIO_HD int megaio_ring_full(uint64_t t, uint64_t claim_head, uint64_t capacity)
{
	return (int64_t)(t - claim_head) >= (int64_t)capacity;
}

#if !defined(__CUDA_ARCH__)
/* ------------------------------------------------------------------------
 * Host-side producer functions (plain C; GCC/Clang atomics). The device-side
 * equivalents live in megaio_device.cuh. Any number of threads may call them
 * at once on one producer side.
 * ------------------------------------------------------------------------ */

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#define MEGAIO_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define MEGAIO_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define MEGAIO_CPU_RELAX() ((void)0)
#endif
#define MEGAIO_LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define MEGAIO_STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Polls before a waiting host producer yields its CPU (sched_yield): a
 * producer that only spins takes the CPU the loop and the kernel's workers
 * need when there are more producer threads than cores. */
#define MEGAIO_HOST_SPINS 64

/* One step of a wait: spin MEGAIO_HOST_SPINS times, then yield. */
static inline void megaio_host_backoff(unsigned *round)
{
	if (*round < MEGAIO_HOST_SPINS) {
		(*round)++;
		MEGAIO_CPU_RELAX();
	} else {
		sched_yield();
	}
}

/* Checks a queue's header and fills a view. Returns 0 or -MEGAIO_EINVAL when
 * the magic, version (a v1 queue is refused), sizes or capacity do not match
 * this header. */
static inline int megaio_attach(void *mem, size_t len, megaio_queue *q)
{
	megaio_queue_header *h = (megaio_queue_header *)mem;
	if (len < MEGAIO_HEADER_SIZE || h->magic != MEGAIO_MAGIC || h->abi_version != MEGAIO_ABI_VERSION ||
	    h->header_size != MEGAIO_HEADER_SIZE || h->slot_size != MEGAIO_SLOT_SIZE ||
	    h->completion_size != MEGAIO_COMPLETION_SIZE || h->capacity < MEGAIO_MIN_CAPACITY ||
	    h->capacity > MEGAIO_MAX_CAPACITY || (h->capacity & (h->capacity - 1)) != 0 || h->completions < 1 ||
	    h->completions > MEGAIO_MAX_COMPLETIONS || h->slots_offset != MEGAIO_HEADER_SIZE ||
	    h->completions_offset != MEGAIO_HEADER_SIZE + (uint64_t)h->capacity * MEGAIO_SLOT_SIZE ||
	    len < megaio_queue_size(h->capacity, h->completions))
		return -MEGAIO_EINVAL;
	q->header = h;
	q->slots = (megaio_request *)((char *)mem + h->slots_offset);
	q->completions = (megaio_completion *)((char *)mem + h->completions_offset);
	q->mask = h->capacity - 1;
	q->ncompletions = h->completions;
	return 0;
}

/* Initialises a producer side for q. Call once, before any producer runs,
 * while no loop runs on the queue (it reads claim_head). */
static inline void megaio_producer_side_init(megaio_producer_side *p, const megaio_queue *q)
{
	uint64_t head = MEGAIO_LOAD_ACQ(&q->header->claim_head);
	p->next_ticket = head;
	p->capacity = (uint32_t)(q->mask + 1);
	p->completions = q->ncompletions;
	p->claim_seen = head;
}

/* P1: takes ticket *t if its slot is free. Returns 0, -MEGAIO_EAGAIN (the
 * ring is full: the loop has not claimed a lap back yet) or
 * -MEGAIO_ESHUTDOWN (the queue is stopped). No ticket is taken on error. */
static inline int megaio_host_take_ticket(const megaio_queue *q, megaio_producer_side *p, uint64_t *t)
{
	uint64_t cap = q->mask + 1;
	uint64_t n = __atomic_load_n(&p->next_ticket, __ATOMIC_RELAXED);
	if (MEGAIO_LOAD_ACQ(&q->header->state) == MEGAIO_STATE_STOPPED)
		return -MEGAIO_ESHUTDOWN;
	for (;;) {
		uint64_t seen = MEGAIO_LOAD_ACQ(&p->claim_seen);
		if (megaio_ring_full(n, seen, cap)) {
			/* The cached claim_head is a lap behind: read the loop's.
			 * Acquire pairs with its release (L1); raising the cache
			 * with release passes that on to whoever acquires it. */
			uint64_t head = MEGAIO_LOAD_ACQ(&q->header->claim_head);
			while ((int64_t)(head - seen) > 0 &&
			       !__atomic_compare_exchange_n(&p->claim_seen, &seen, head, 1, __ATOMIC_RELEASE,
							    __ATOMIC_ACQUIRE))
				;
			if (megaio_ring_full(n, head, cap)) {
				uint64_t again = __atomic_load_n(&p->next_ticket, __ATOMIC_RELAXED);
				if (again == n)
					return -MEGAIO_EAGAIN;
				n = again; /* someone took n meanwhile: try the next one */
				continue;
			}
		}
		if (__atomic_compare_exchange_n(&p->next_ticket, &n, n + 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
			*t = n;
			return 0;
		}
	}
}

/* P3-P4: fills slot t & mask from *req (its seq is ignored) and publishes
 * it. Call once for every ticket taken, at once. */
static inline void megaio_host_publish(const megaio_queue *q, uint64_t t, const megaio_request *req)
{
	megaio_request *slot = &q->slots[t & q->mask];
	slot->op = req->op;
	slot->flags = req->flags;
	slot->file = req->file;
	slot->dest = req->dest;
	slot->completion = req->completion;
	slot->file_offset = req->file_offset;
	slot->dest_offset = req->dest_offset;
	slot->length = req->length;
	slot->tag = req->tag;
	slot->reserved1 = req->reserved1;
	MEGAIO_STORE_REL(&slot->seq, t + 1);
}

/* P1-P4 without waiting: returns 0 with *ticket set, -MEGAIO_EAGAIN if the
 * ring is full, -MEGAIO_ESHUTDOWN if the queue is stopped, or -MEGAIO_EINVAL
 * if req->completion is not a completion id of this queue (nothing is
 * published on error). The caller owns req->completion until it has polled
 * the ticket to completion: no other request in flight may name it. */
static inline int megaio_host_try_submit(const megaio_queue *q, megaio_producer_side *p, const megaio_request *req,
					 uint64_t *ticket)
{
	int r;
	if (req->completion >= q->ncompletions)
		return -MEGAIO_EINVAL;
	if ((r = megaio_host_take_ticket(q, p, ticket)) == 0)
		megaio_host_publish(q, *ticket, req);
	return r;
}

/* Like megaio_host_try_submit, but waits (spin, then yield) while the ring
 * is full. The wait depends only on the loop claiming; it ends with
 * -MEGAIO_ESHUTDOWN when the queue stops. */
static inline int megaio_host_submit(const megaio_queue *q, megaio_producer_side *p, const megaio_request *req,
				     uint64_t *ticket)
{
	unsigned round = 0;
	int r;
	while ((r = megaio_host_try_submit(q, p, req, ticket)) == -MEGAIO_EAGAIN)
		megaio_host_backoff(&round);
	return r;
}

/* P5: polls ticket t, published with completion id c, once. Returns 1 with
 * *result set (c is free again), 0 if pending, or -MEGAIO_ESHUTDOWN if the
 * loop stopped without claiming t (the request stays published and c stays
 * reserved; poll again after a loop starts on the queue). */
static inline int megaio_host_poll(const megaio_queue *q, uint32_t c, uint64_t t, int64_t *result)
{
	megaio_completion *cp = &q->completions[c];
	if (MEGAIO_LOAD_ACQ(&cp->done) == t + 1) {
		*result = cp->result;
		return 1;
	}
	if (MEGAIO_LOAD_ACQ(&q->header->state) == MEGAIO_STATE_STOPPED) {
		/* Acquire, like every load of a word the loop writes: a loop
		 * started again may be storing claim_head now. */
		uint64_t head = MEGAIO_LOAD_ACQ(&q->header->claim_head);
		/* Re-check done: the loop stores done before it stops. */
		if (MEGAIO_LOAD_ACQ(&cp->done) == t + 1) {
			*result = cp->result;
			return 1;
		}
		if ((int64_t)(t - head) >= 0)
			return -MEGAIO_ESHUTDOWN;
	}
	return 0;
}

/* Waits (spin, then yield) for ticket t with completion id c. Returns 1
 * with *result set, or -MEGAIO_ESHUTDOWN (see megaio_host_poll). */
static inline int megaio_host_wait(const megaio_queue *q, uint32_t c, uint64_t t, int64_t *result)
{
	unsigned round = 0;
	int r;
	while ((r = megaio_host_poll(q, c, t, result)) == 0)
		megaio_host_backoff(&round);
	return r;
}
#endif /* !__CUDA_ARCH__ */

#ifdef __cplusplus
}
#endif
#endif /* MEGAIO_H */
