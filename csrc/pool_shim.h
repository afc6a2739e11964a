/*
 * pool_shim.h - megaio's worker-pool backend, for machines where io_uring is
 * refused: a fixed pool of POSIX threads doing pread / pwrite / fdatasync
 * straight into the registered buffers. It takes the same batches as the
 * io_uring shim (struct megaio_sqe in, struct megaio_cqe out) so the Go cycle
 * cannot tell the two apart.
 *
 * The workers are C threads, not goroutines: a worker waking from its futex
 * needs no Go scheduler slot, so the pool does not compete with the loop and
 * the application for GOMAXPROCS.
 *
 * Threads: megaio_pool_enter, _cancel_all, _cancel, _interrupt, _set_file and
 * _close are called by the loop's thread only; the workers touch only the
 * queues, the file table (read), the cancel words and the futex words.
 */
#ifndef MEGAIO_POOL_SHIM_H
#define MEGAIO_POOL_SHIM_H

#include "backend.h"

struct megaio_pool;

/* Starts workers threads. The submission queue holds sq_entries jobs (more
 * is backpressure), the completion queue cq_entries (at least the most jobs
 * ever in flight); both powers of two, at least 2 (-EINVAL otherwise).
 * user_data 0..nrecs-1 name requests megaio_pool_cancel may cancel one by
 * one. Returns 0 or -errno. */
int megaio_pool_open(struct megaio_pool **out, unsigned workers, unsigned sq_entries, unsigned cq_entries,
		     unsigned nfiles, unsigned nrecs);

/* As megaio_ring_enter: queues sqes[0..n) while the submission queue has
 * room, then copies up to max completions; with wait_ns > 0 and none ready,
 * waits up to wait_ns for the first. Returns 0. */
int megaio_pool_enter(struct megaio_pool *p, const struct megaio_sqe *sqes, unsigned n, unsigned *taken,
		      struct megaio_cqe *cqes, unsigned max, unsigned *reaped, int64_t wait_ns);

/* Jobs queued so far complete with -ECANCELED without running; a job inside
 * its syscall runs to its end unless megaio_pool_interrupt gets it out. */
void megaio_pool_cancel_all(struct megaio_pool *p);

/* Sends megaio_pool_signal() to every worker inside a system call for a job
 * queued before the last cancel, so that an interruptible wait (a pipe, a
 * socket, a FUSE server that honours interrupts) fails with EINTR and the
 * job ends with -ECANCELED. Returns how many workers it signalled: call it
 * again (each cycle) until that is 0 or their jobs have completed; a worker
 * in an uninterruptible wait stays there. */
unsigned megaio_pool_interrupt(struct megaio_pool *p);

/* Cancels the job in flight with user_data (below nrecs). A job no worker
 * has taken yet is taken back: it will never run nor be reaped, and 1 is
 * returned: the caller completes the request itself. A job inside its
 * system call is marked and its worker signalled (an interruptible wait
 * fails with EINTR and the job ends with -ECANCELED, or the bytes it
 * moved); the signal can land just before the call, so call it again each
 * cycle until the job completes. Returns 0 then, and for a job already
 * done. */
int megaio_pool_cancel(struct megaio_pool *p, uint64_t user_data);

/* The signal megaio_pool_interrupt sends (SIGRTMAX - 2). Its handler is
 * installed by the first megaio_pool_open, without SA_RESTART; on threads
 * other than the workers it passes the signal to the handler it replaced. */
int megaio_pool_signal(void);

/* Points file slot idx at a duplicate of fd (-1 clears it). A cleared
 * descriptor is closed once nothing is in flight, so its number cannot be
 * reused under a queued job. Returns 0 or -errno. */
int megaio_pool_set_file(struct megaio_pool *p, unsigned idx, int fd);

/* Stops and joins the workers (a worker blocked in a syscall is waited
 * for), closes the pool's descriptors and frees it. */
void megaio_pool_close(struct megaio_pool *p);

#endif
