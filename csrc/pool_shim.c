/* pool_shim.c - see pool_shim.h. Compiled into the Go package through
 * pool.go's preamble.
 *
 * ------------------------------------------------------------------------
 * The ordering argument
 * ------------------------------------------------------------------------
 * Two kinds of thread share this pool: the loop's thread (megaio_pool_enter,
 * _cancel_all, _cancel, _interrupt, _set_file, _close: one thread, never two
 * at once) and the workers. Every shared word, who writes it, and what pairs with
 * what (all atomics are seq_cst unless named otherwise):
 *
 *   sq (cells, enq, deq)  the loop pushes jobs, workers pop them. A cell's
 *                         seq is stored with release after the job is
 *                         copied in, and loaded with acquire before it is
 *                         copied out (Vyukov's queue, below): a worker sees
 *                         the whole job.
 *   cq                    workers push finished jobs, the loop pops them,
 *                         the same way round: the loop sees the result, and
 *                         everything the worker's system call wrote before
 *                         it (the push's release follows the call).
 *   work_seq, sleepers    W1 sleepers++, W2 read work_seq, W3 sq empty? ->
 *                         futex_wait(work_seq, value read in W2). The loop:
 *                         L1 push, L2 work_seq++, L3 read sleepers -> wake.
 *                         Both sides are seq_cst, so either L3 sees W1 (and
 *                         wakes; if the wake comes before the wait, W2's
 *                         value is stale and futex_wait returns at once) or
 *                         W3 sees L1. A worker never sleeps on queued work.
 *   comp_seq, loop_waits  the same handshake the other way: the loop sets
 *                         loop_waits, reads comp_seq, checks cq, waits
 *                         (bounded); a worker pushes, bumps comp_seq, reads
 *                         loop_waits and wakes. The wait is bounded anyway,
 *                         so a lost wake would cost at most that bound.
 *   cancel_gen            written by the loop only (cancel_all). Jobs carry
 *                         the generation they were queued in.
 *   ws[i].call_gen        written by worker i only: its job's generation + 1
 *                         before it checks cancel_gen and makes a system
 *                         call, 0 after. R1 store call_gen, R2 load
 *                         cancel_gen. The loop: C1 cancel_gen++, C2 (each
 *                         cycle while cancelling) read every call_gen and
 *                         signal the workers announcing an older
 *                         generation. Either R2 sees C1 (the job ends with
 *                         -ECANCELED and no call) or C2 sees R1 (the worker
 *                         is signalled). A signal that lands between R2 and
 *                         the call is lost; C2 runs again next cycle.
 *   state[ud]             one request's cancel (megaio_pool_cancel):
 *                         epoch << 2 | QUEUED, RUNNING, DONE or
 *                         CANCELLING, for the job whose user_data is ud (a
 *                         loop record; one job per record at a time). The
 *                         loop stores a new epoch with QUEUED before it
 *                         pushes the job (the push's release publishes
 *                         it). A worker takes the job with a CAS QUEUED ->
 *                         RUNNING, and stores DONE before it pushes the
 *                         result. The loop's cancel takes a queued job
 *                         back with a CAS QUEUED -> DONE: then no worker
 *                         runs it (their CAS fails, and a later job of
 *                         the record has a new epoch), it never reaches
 *                         cq, and the loop completes the request itself.
 *                         A running job it marks with a CAS RUNNING ->
 *                         CANCELLING and signals the worker announcing ud
 *                         + 1 in ws[i].call_ud (stored before call_gen, so
 *                         before the worker's R2, where it also loads
 *                         state): either the worker sees CANCELLING or the
 *                         loop sees the announcement. A lost signal is
 *                         sent again next cycle; a stray one (a signal for
 *                         an earlier job of the worker) costs a retried
 *                         system call.
 *   stopping              written by close; workers read it when idle.
 *   fds, stream           the loop's alone (set_file writes, enter reads):
 *                         a job carries its descriptor, resolved when
 *                         queued, as io_uring resolves fixed files.
 *   inflight, graveyard   the loop's alone.
 *
 * Why a cancelled job cannot write after Stop returns: a job's only writes
 * into a registered buffer are its system call's, and the call is over
 * before the job is pushed to cq. Stop returns when the loop has reaped
 * every job (or, for a worker in a wait no signal ends, with
 * ErrStopIncomplete, keeping every buffer mapped until that job is
 * reaped). A cancelled job either never makes its call (R2 saw the new
 * generation), or its call was interrupted or ran to its end, and it is
 * reaped like any other. And a job never uses a closed descriptor's
 * number: set_file moves a cleared descriptor to the graveyard, closed only
 * when nothing is in flight. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "megaio.h" /* MEGAIO_CPU_RELAX */
#include "pool_shim.h"

/* How often an idle worker polls before it sleeps: short, because on small
 * machines a spinning worker takes the loop's core. */
#define WORKER_SPINS 128

struct job {
	struct megaio_sqe sqe;
	uint64_t gen;   /* cancel generation it was queued in */
	uint32_t epoch; /* its epoch in state[sqe.user_data] (none past nrecs) */
	int fd;       /* resolved when queued, as io_uring resolves fixed files at submission;
		       * the graveyard keeps the number open until nothing is in flight */
	int stream;
	int32_t res;
};

/* A bounded lock-free multi-producer multi-consumer queue (Dmitry Vyukov's
 * design): cell.seq == pos means free for the push of pos, pos + 1 means it
 * holds the value for the pop of pos. Positions are claimed with a CAS. */
struct cell {
	_Atomic uint64_t seq;
	struct job v;
};

struct mpmc {
	struct cell *cells;
	uint64_t mask;
	_Alignas(64) _Atomic uint64_t enq;
	_Alignas(64) _Atomic uint64_t deq;
};

/* What the loop knows of one worker: which cancel generation's job it is
 * running a system call for (+1; 0 when none), so that a cancel can
 * interrupt it (megaio_pool_interrupt). */
struct worker_state {
	_Alignas(64) _Atomic uint64_t call_gen;
	_Atomic uint64_t call_ud; /* the job's user_data + 1 while in its call, else 0 */
	pthread_t tid;
	struct megaio_pool *pool;
};

struct megaio_pool {
	struct mpmc sq, cq;
	unsigned nworkers, nfiles;
	pthread_t *tids;
	struct worker_state *ws;
	_Atomic int *fds;         /* the pool's own dup per file slot, -1 when free */
	_Atomic unsigned char *stream; /* no offsets: read(2)/write(2), as io_uring does */
	int *graveyard;           /* cleared descriptors, closed when nothing is in flight */
	unsigned ngrave, capgrave;
	uint64_t inflight;        /* jobs queued and not reaped: loop thread only */
	_Alignas(64) _Atomic uint32_t work_seq; /* futex: bumped when work is queued */
	_Atomic int sleepers;                   /* workers asleep or about to be */
	_Alignas(64) _Atomic uint32_t comp_seq; /* futex: bumped per completion */
	_Atomic int loop_waits;                 /* 1 while the loop waits for a completion */
	_Atomic uint64_t cancel_gen;
	_Atomic uint32_t *state; /* per user_data below nrecs: megaio_pool_cancel */
	unsigned nrecs;
	_Atomic int stopping;
};

/* A job's state word: epoch << 2 | one of these. */
enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_CANCELLING };

/* The state word of the job with user_data ud, or NULL: the loop's records
 * are 0..nrecs-1; other user_data (the device engine's) are never
 * cancelled one by one. */
static _Atomic uint32_t *state_of(struct megaio_pool *p, uint64_t ud)
{
	return ud < p->nrecs ? &p->state[ud] : NULL;
}

/* take moves a popped job from QUEUED to RUNNING; false when the loop took
 * it back first (megaio_pool_cancel): the job is dropped unrun. */
static int take(struct megaio_pool *p, const struct job *j)
{
	_Atomic uint32_t *st = state_of(p, j->sqe.user_data);
	uint32_t queued = j->epoch << 2 | JOB_QUEUED;
	return !st || atomic_compare_exchange_strong(st, &queued, j->epoch << 2 | JOB_RUNNING);
}

/* size: a power of two, at least 2 (pool.go rounds it). */
static int mpmc_init(struct mpmc *q, unsigned size)
{
	if (size < 2 || (size & (size - 1)))
		return -EINVAL;
	q->cells = calloc(size, sizeof(*q->cells));
	if (!q->cells)
		return -ENOMEM;
	q->mask = size - 1;
	for (unsigned i = 0; i < size; i++)
		atomic_init(&q->cells[i].seq, i);
	atomic_init(&q->enq, 0);
	atomic_init(&q->deq, 0);
	return 0;
}

static int mpmc_push(struct mpmc *q, const struct job *v)
{
	uint64_t pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
	for (;;) {
		struct cell *c = &q->cells[pos & q->mask];
		int64_t d = (int64_t)(atomic_load_explicit(&c->seq, memory_order_acquire) - pos);
		if (d == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->enq, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed)) {
				c->v = *v;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return 1;
			}
		} else if (d < 0) {
			return 0; /* full */
		} else {
			pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
		}
	}
}

static int mpmc_pop(struct mpmc *q, struct job *v)
{
	uint64_t pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
	for (;;) {
		struct cell *c = &q->cells[pos & q->mask];
		int64_t d = (int64_t)(atomic_load_explicit(&c->seq, memory_order_acquire) - (pos + 1));
		if (d == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->deq, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed)) {
				*v = c->v;
				atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
				return 1;
			}
		} else if (d < 0) {
			return 0; /* empty */
		} else {
			pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
		}
	}
}

static int mpmc_empty(struct mpmc *q)
{
	uint64_t pos = atomic_load(&q->deq);
	return (int64_t)(atomic_load(&q->cells[pos & q->mask].seq) - (pos + 1)) < 0;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *ts)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}


/* ------------------------------------------------------------------------
 * Interrupting a worker blocked in a system call (Stop's deadline).
 *
 * A cancel bumps cancel_gen; megaio_pool_interrupt then sends
 * MEGAIO_POOL_SIGNAL (pthread_kill) to every worker whose call_gen says it
 * is in a system call for an older generation. The handler is installed
 * without SA_RESTART, so a read or write blocked in an interruptible wait
 * (a pipe, a socket, a FUSE file whose server honours the interrupt) fails
 * with EINTR; run sees the generation moved and ends the job with
 * -ECANCELED (or the bytes already moved). A signal that lands between the
 * worker's check and its system call is lost, so the loop calls
 * megaio_pool_interrupt again every cycle while such workers remain.
 *
 * The Go runtime's signals are safe: workers block every signal but this
 * one, and the handler does nothing on a worker thread and hands the signal
 * to the handler installed before it (Go's, typically) on any other thread,
 * so a process that uses the signal itself still gets it. It is installed
 * with SA_ONSTACK, as Go requires of handlers installed by C code. A
 * program that later installs its own handler for this signal (os/signal
 * included) takes it over, and Stop then waits at most its grace for
 * workers it can no longer interrupt. */

static _Thread_local int is_worker; /* set in worker threads */
static struct sigaction previous;    /* the action this one replaced */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_err;

int megaio_pool_signal(void) { return SIGRTMAX - 2; }

static void on_signal(int sig, siginfo_t *info, void *uctx)
{
	if (is_worker)
		return; /* the system call it interrupted fails with EINTR */
	if (previous.sa_flags & SA_SIGINFO) {
		if (previous.sa_sigaction)
			previous.sa_sigaction(sig, info, uctx);
	} else if (previous.sa_handler == SIG_DFL) {
		/* Nobody else handled it: what the default would have done. */
		signal(sig, SIG_DFL);
		raise(sig);
	} else if (previous.sa_handler != SIG_IGN) {
		previous.sa_handler(sig);
	}
}

static void install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK; /* no SA_RESTART: that is the point */
	sigfillset(&sa.sa_mask);
	if (sigaction(megaio_pool_signal(), &sa, &previous) < 0)
		install_err = errno;
}

unsigned megaio_pool_interrupt(struct megaio_pool *p)
{
	uint64_t gen = atomic_load(&p->cancel_gen);
	unsigned n = 0;
	for (unsigned i = 0; i < p->nworkers; i++) {
		uint64_t g = atomic_load(&p->ws[i].call_gen);
		if (g != 0 && g - 1 != gen) {
			pthread_kill(p->ws[i].tid, megaio_pool_signal());
			n++;
		}
	}
	return n;
}

/* run does one job's syscall and returns its result as io_uring would. */
static int32_t run(struct megaio_pool *p, struct worker_state *w, const struct job *j)
{
	const struct megaio_sqe *s = &j->sqe;
	/* Announce the call before checking the generation: a cancel after
	 * the check finds us announced and interrupts us. */
	atomic_store(&w->call_ud, s->user_data + 1);
	atomic_store(&w->call_gen, j->gen + 1);
	_Atomic uint32_t *st = state_of(p, s->user_data);
	const uint32_t cancelling = j->epoch << 2 | JOB_CANCELLING;
	int32_t res = 0;
	int fd = j->fd, stream = j->stream;
	void *addr = (void *)(uintptr_t)s->addr;
	for (;;) {
		if (j->gen != atomic_load(&p->cancel_gen) || (st && atomic_load(st) == cancelling)) {
			res = -ECANCELED;
			break;
		}
		if (fd < 0) {
			res = -EBADF;
			break;
		}
		ssize_t r;
		switch (s->op) {
		case MEGAIO_SQE_READ:
			r = stream ? read(fd, addr, s->len) : pread(fd, addr, s->len, (off_t)s->off);
			break;
		case MEGAIO_SQE_WRITE:
			r = stream ? write(fd, addr, s->len) : pwrite(fd, addr, s->len, (off_t)s->off);
			break;
		case MEGAIO_SQE_FSYNC:
			r = fdatasync(fd);
			break;
		default: /* an op this shim does not know: refused, never guessed at */
			r = -1;
			errno = EINVAL;
			break;
		}
		if (r >= 0) {
			res = (int32_t)r;
			break;
		}
		if (errno != EINTR) {
			res = -errno;
			break;
		}
		/* EINTR: a cancel's signal (the loop checks above), or a stray one. */
	}
	atomic_store(&w->call_gen, 0);
	atomic_store(&w->call_ud, 0);
	if (st)
		atomic_store(st, j->epoch << 2 | JOB_DONE); /* before the result is pushed */
	return res;
}

static void *worker(void *arg)
{
	struct worker_state *w = arg;
	struct megaio_pool *p = w->pool;
	unsigned idle = 0;
	struct job j;
	/* Every signal is blocked (megaio_pool_open) but the interrupt. */
	is_worker = 1;
	sigset_t only;
	sigemptyset(&only);
	sigaddset(&only, megaio_pool_signal());
	pthread_sigmask(SIG_UNBLOCK, &only, NULL);
	for (;;) {
		if (!mpmc_pop(&p->sq, &j)) {
			if (atomic_load(&p->stopping))
				return NULL;
			if (++idle < WORKER_SPINS) {
				MEGAIO_CPU_RELAX();
				continue;
			}
			/* Announce the sleep, then re-check: the loop bumps
			 * work_seq after queueing and wakes only if it sees a
			 * sleeper, so either it sees us or we see its job. */
			atomic_fetch_add(&p->sleepers, 1);
			uint32_t seq = atomic_load(&p->work_seq);
			if (mpmc_empty(&p->sq) && !atomic_load(&p->stopping))
				futex_wait(&p->work_seq, seq, NULL);
			atomic_fetch_sub(&p->sleepers, 1);
			continue;
		}
		idle = 0;
		if (!take(p, &j))
			continue; /* taken back by megaio_pool_cancel: the loop completed it */
		j.res = run(p, w, &j);
		mpmc_push(&p->cq, &j); /* cannot fail: sized above the in-flight cap */
		atomic_fetch_add(&p->comp_seq, 1);
		if (atomic_load(&p->loop_waits))
			futex_wake(&p->comp_seq, 1);
	}
}

void megaio_pool_close(struct megaio_pool *p)
{
	atomic_store(&p->stopping, 1);
	atomic_fetch_add(&p->work_seq, 1);
	futex_wake(&p->work_seq, INT32_MAX);
	for (unsigned i = 0; i < p->nworkers; i++)
		pthread_join(p->tids[i], NULL);
	for (unsigned i = 0; i < p->nfiles; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
	for (unsigned i = 0; i < p->ngrave; i++)
		close(p->graveyard[i]);
	free(p->graveyard);
	free(p->tids);
	free(p->ws);
	free((void *)p->fds);
	free((void *)p->stream);
	free((void *)p->state);
	free(p->sq.cells);
	free(p->cq.cells);
	free(p);
}

int megaio_pool_open(struct megaio_pool **out, unsigned workers, unsigned sq_entries, unsigned cq_entries,
		     unsigned nfiles, unsigned nrecs)
{
	struct megaio_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->nfiles = nfiles;
	p->nrecs = nrecs;
	p->state = calloc(nrecs ? nrecs : 1, sizeof(*p->state));
	p->fds = calloc(nfiles, sizeof(*p->fds));
	p->stream = calloc(nfiles, sizeof(*p->stream));
	p->tids = calloc(workers, sizeof(*p->tids));
	p->ws = calloc(workers, sizeof(*p->ws));
	if (!p->fds || !p->stream || !p->state || !p->tids || !p->ws || mpmc_init(&p->sq, sq_entries) || mpmc_init(&p->cq, cq_entries)) {
		megaio_pool_close(p);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < nfiles; i++)
		atomic_init(&p->fds[i], -1);
	pthread_once(&install_once, install);
	if (install_err) {
		int err = install_err;
		megaio_pool_close(p);
		return -err;
	}

	/* Workers block every signal: they never run Go code, and a signal
	 * meant for the process must go to a Go thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	int ret = 0;
	for (unsigned i = 0; i < workers; i++) {
		p->ws[i].pool = p;
		ret = pthread_create(&p->tids[i], &attr, worker, &p->ws[i]);
		if (ret)
			break;
		p->ws[i].tid = p->tids[i];
		p->nworkers++;
	}
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		megaio_pool_close(p);
		return -ret;
	}
	*out = p;
	return 0;
}

static unsigned reap(struct megaio_pool *p, struct megaio_cqe *cqes, unsigned max)
{
	unsigned n = 0;
	struct job j;
	while (n < max && mpmc_pop(&p->cq, &j)) {
		cqes[n].user_data = j.sqe.user_data;
		cqes[n].res = j.res;
		cqes[n].flags = 0;
		n++;
	}
	p->inflight -= n;
	if (p->inflight == 0 && p->ngrave > 0) {
		for (unsigned i = 0; i < p->ngrave; i++)
			close(p->graveyard[i]);
		p->ngrave = 0;
	}
	return n;
}

int megaio_pool_enter(struct megaio_pool *p, const struct megaio_sqe *sqes, unsigned n, unsigned *taken,
		      struct megaio_cqe *cqes, unsigned max, unsigned *reaped, int64_t wait_ns)
{
	uint64_t gen = atomic_load(&p->cancel_gen);
	unsigned i;
	for (i = 0; i < n; i++) {
		struct job j = {.sqe = sqes[i], .gen = gen, .fd = -1};
		_Atomic uint32_t *st = state_of(p, sqes[i].user_data);
		if (st) { /* a new epoch: the record's earlier job, if taken back and still queued, cannot take this one */
			j.epoch = (atomic_load(st) >> 2) + 1;
			atomic_store(st, j.epoch << 2 | JOB_QUEUED);
		}
		if (sqes[i].flags & MEGAIO_SQE_RAW_FD) {
			j.fd = sqes[i].file; /* kept open by the loop until the job completes; positional IO */
		} else if (sqes[i].file >= 0 && (unsigned)sqes[i].file < p->nfiles) {
			j.fd = atomic_load(&p->fds[sqes[i].file]);
			j.stream = atomic_load(&p->stream[sqes[i].file]);
		}
		if (!mpmc_push(&p->sq, &j))
			break; /* full: backpressure */
	}
	*taken = i;
	if (i > 0) {
		p->inflight += i;
		atomic_fetch_add(&p->work_seq, 1);
		int s = atomic_load(&p->sleepers);
		if (s > 0)
			futex_wake(&p->work_seq, s < (int)i ? s : (int)i);
	}
	unsigned got = reap(p, cqes, max);
	if (got == 0 && wait_ns > 0 && p->inflight > 0) {
		struct timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
		atomic_store(&p->loop_waits, 1);
		uint32_t seq = atomic_load(&p->comp_seq);
		if (mpmc_empty(&p->cq))
			futex_wait(&p->comp_seq, seq, &ts);
		atomic_store(&p->loop_waits, 0);
		got = reap(p, cqes, max);
	}
	*reaped = got;
	return 0;
}

void megaio_pool_cancel_all(struct megaio_pool *p) { atomic_fetch_add(&p->cancel_gen, 1); }

int megaio_pool_cancel(struct megaio_pool *p, uint64_t user_data)
{
	_Atomic uint32_t *st = state_of(p, user_data);
	if (!st)
		return 0;
	uint32_t old = atomic_load(st), epoch = old >> 2;
	if ((old & 3) == JOB_QUEUED) {
		if (atomic_compare_exchange_strong(st, &old, epoch << 2 | JOB_DONE)) {
			p->inflight--; /* no worker will run it, nor push its result */
			return 1;
		}
		/* a worker took it meanwhile: old is now what it stored */
	}
	if ((old & 3) == JOB_RUNNING)
		atomic_compare_exchange_strong(st, &old, epoch << 2 | JOB_CANCELLING);
	for (unsigned i = 0; i < p->nworkers; i++)
		if (atomic_load(&p->ws[i].call_ud) == user_data + 1)
			pthread_kill(p->ws[i].tid, megaio_pool_signal());
	return 0;
}

int megaio_pool_set_file(struct megaio_pool *p, unsigned idx, int fd)
{
	if (idx >= p->nfiles)
		return -EINVAL;
	int old = atomic_exchange(&p->fds[idx], -1);
	if (old >= 0) {
		if (p->inflight == 0) {
			close(old);
		} else {
			if (p->ngrave == p->capgrave) {
				unsigned cap = p->capgrave ? 2 * p->capgrave : 8;
				int *g = realloc(p->graveyard, cap * sizeof(int));
				if (!g) {
					close(old); /* cannot defer; a queued job on this slot sees -EBADF anyway */
					goto set;
				}
				p->graveyard = g;
				p->capgrave = cap;
			}
			p->graveyard[p->ngrave++] = old;
		}
	}
set:
	if (fd < 0)
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dup < 0)
		return -errno;
	atomic_store(&p->stream[idx], S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode));
	atomic_store(&p->fds[idx], dup);
	return 0;
}
