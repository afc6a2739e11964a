/*
 * megaio_cpu.h - runs CUDA kernels written against megaio_device.cuh on CPU
 * threads, against a real megaio loop, so a megakernel's IO logic executes
 * (and runs under ThreadSanitizer) in ordinary tests on machines without a
 * GPU.
 *
 * Not included by hand: megaio_device.cuh includes it when the compiler is
 * not nvcc. Build a kernel file as C++17 into a shared library of its own,
 * one translation unit per library:
 *
 *     g++ -std=c++17 -O2 -g -fPIC -shared -pthread -x c++ \
 *         -I<megaio>/include -I<libcu++: the CUDA include dir> \
 *         kernels.cu -o kernels.so            # add -fsanitize=thread for TSan
 *
 * and launch it from Go with cpukernel.Load and Module.Launch (package
 * github.com/megaio/megaio/cpukernel), or let package kernels build and
 * launch it.
 * Each kernel the library offers is named after its definition with
 * MEGAIO_CPU_KERNEL(name); on a GPU build that line compiles to nothing.
 *
 * The model (what a GPU guarantees and a kernel may rely on, no more):
 *   - one OS thread per CUDA thread; every block of the grid runs at once,
 *     as a persistent kernel's blocks are all resident;
 *   - threadIdx, blockIdx, blockDim and gridDim are per thread;
 *   - warps are cut from the linear thread index x + y*Dx + z*Dx*Dy, 32
 *     lanes each, the last one short when the block is;
 *   - __syncthreads is a barrier of the block's threads that have not
 *     returned; block-shared storage (MEGAIO_BLOCK_SHARED) is one copy per
 *     block;
 *   - warp operations (__shfl_sync, __shfl_down_sync, __ballot_sync,
 *     __syncwarp) are rendezvous of exactly the lanes their mask names, and
 *     check what CUDA leaves undefined: the caller in its own mask, every
 *     named lane existing and not returned, every named lane calling the
 *     same operation with the same mask. A broken rule aborts the launch
 *     with a message naming the kernel, block, warp and lanes. A shuffle
 *     reading a lane its mask does not name gets 0xbad0bad0bad0bad0;
 *   - __activemask() names every lane of the warp that has not returned
 *     (MEGAIO_CPU_MASK_LIVE), or only the calling lane
 *     (MEGAIO_CPU_MASK_CALLER: the least independent thread scheduling
 *     allows on sm_70 and newer), chosen per launch;
 *   - __nanosleep sleeps (the thread's timer slack is set to 1 ns);
 *   - atomicAdd and libcu++'s cuda::atomic_ref are the compiler's atomics
 *     (libcu++'s own host path), which ThreadSanitizer sees.
 * What it cannot show: ordering across PCIe, the GPU's memory model beyond
 * C++'s, the real driver and cuFile, and speed.
 *
 * An aborted launch's threads leave at their next call into this header
 * (a barrier, a warp operation, __nanosleep); the launch ends when all have.
 */
#ifndef MEGAIO_CPU_H
#define MEGAIO_CPU_H

#if defined(__CUDACC__)
#error "megaio_cpu.h is the host build of device code; nvcc builds use the GPU"
#endif
#if __cplusplus < 201703L
#error "megaio_cpu.h needs C++17 (-std=c++17)"
#endif

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define MEGAIO_CPU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MEGAIO_CPU_TSAN 1
#endif
#endif
#ifdef MEGAIO_CPU_TSAN
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
#endif

/* CUDA's qualifiers mean nothing on the host (libcu++ may have defined
 * some already, the same way). */
#ifndef __device__
#define __device__
#endif
#ifndef __global__
#define __global__
#endif
#ifndef __host__
#define __host__
#endif
#ifndef __forceinline__
#define __forceinline__
#endif

/* The version of the entry points below (megaio_cpu_*); the Go loader
 * refuses a library built against another. */
#define MEGAIO_CPU_ABI 2

/* __activemask() modes, per launch. */
enum { MEGAIO_CPU_MASK_LIVE = 0, MEGAIO_CPU_MASK_CALLER = 1 };

struct uint3 {
	unsigned x, y, z;
};
struct dim3 {
	unsigned x, y, z;
};

/* Thread-local storage in the static TLS block: a library loaded with
 * dlopen would otherwise get it from malloc in each thread, freed by the
 * thread that joins it, which ThreadSanitizer reports as a race inside
 * glibc. It is a few dozen bytes, within what glibc keeps spare. */
#define MEGAIO_CPU_TLS static thread_local __attribute__((tls_model("initial-exec")))

/* CUDA's built-in indices: per thread, internal to the library. */
MEGAIO_CPU_TLS uint3 threadIdx, blockIdx;
MEGAIO_CPU_TLS dim3 blockDim, gridDim;

namespace megaio_cpu {
namespace {

struct aborted {}; /* thrown out of a shim call to end an aborted launch's thread */

struct launch;
struct block;

/* One warp: the state of the warp operation in progress, if any. */
struct warp {
	std::mutex mu;
	std::condition_variable cv;
	unsigned index = 0;   /* in its block */
	uint32_t exists = 0;  /* lanes the block has */
	uint32_t live = 0;    /* of those, not returned */
	const char *op = nullptr; /* the operation being gathered, or none */
	uint32_t mask = 0, arrived = 0, departed = 0;
	bool draining = false; /* every lane arrived; results being read */
	uint64_t gen = 0;
	uint64_t val[32] = {}, out[32] = {};
};

struct block {
	unsigned index = 0;
	uint3 idx = {0, 0, 0};
	std::mutex mu;
	std::condition_variable cv;
	unsigned live = 0, arrived = 0; /* __syncthreads */
	uint64_t gen = 0;
	std::vector<std::unique_ptr<warp>> warps;
	std::map<const void *, void *> shared; /* MEGAIO_BLOCK_SHARED storage, by call site */
	~block()
	{
		for (auto &kv : shared)
			::operator delete(kv.second);
	}
};

/* One CUDA thread. */
struct thread {
	launch *l = nullptr;
	block *b = nullptr;
	warp *w = nullptr;
	uint3 tid = {0, 0, 0};
	unsigned linear = 0, lane = 0;
	pthread_t th{};
	bool started = false;
	const char *waiting = nullptr; /* the last shim call it made, for a stuck launch's report (atomic) */
	bool returned = false;         /* (atomic) */
};

struct launch {
	std::string kernel;
	void (*entry)(const uint64_t *) = nullptr;
	std::vector<uint64_t> args;
	dim3 grid{}, bdim{};
	int mode = MEGAIO_CPU_MASK_LIVE;
	std::vector<std::unique_ptr<block>> blocks;
	std::vector<thread> threads;
	std::mutex mu;
	std::condition_variable cv;
	unsigned running = 0;
	bool failed = false;
	std::string why; /* the first abort's message */
};

MEGAIO_CPU_TLS thread *self = nullptr;

/* A kernel the library offers (MEGAIO_CPU_KERNEL). */
struct kernel_entry {
	const char *name;
	void (*call)(const uint64_t *);
	int nargs;
};
/* The library's kernels, filled when it is loaded and read by launches
 * from whichever thread the caller uses: the lock is what tells
 * ThreadSanitizer so (the loader's thread and the launcher's are joined
 * by the Go runtime, which it does not see). */
std::mutex registry_mu;
std::vector<kernel_entry> &registry()
{
	static std::vector<kernel_entry> r;
	return r;
}

template <class T> T from_arg(uint64_t v)
{
	if constexpr (std::is_pointer_v<T>) {
		return reinterpret_cast<T>(static_cast<uintptr_t>(v));
	} else {
		static_assert(std::is_integral_v<T> || std::is_enum_v<T>,
			      "a CPU-launched kernel takes integers and pointers (64-bit words)");
		return static_cast<T>(v);
	}
}
template <class... A, size_t... I> void call_with(void (*k)(A...), const uint64_t *a, std::index_sequence<I...>)
{
	k(from_arg<A>(a[I])...);
}
template <class... A> void invoke(void (*k)(A...), const uint64_t *a) { call_with(k, a, std::index_sequence_for<A...>{}); }
template <class... A> constexpr int arity(void (*)(A...)) { return (int)sizeof...(A); }

struct registrar {
	registrar(const char *name, void (*call)(const uint64_t *), int n)
	{
		std::lock_guard<std::mutex> g(registry_mu);
		registry().push_back({name, call, n});
	}
};

std::string lanes_str(uint32_t m)
{
	std::string s;
	for (int i = 0; i < 32;) {
		if (!(m >> i & 1)) {
			i++;
			continue;
		}
		int j = i;
		while (j + 1 < 32 && (m >> (j + 1) & 1))
			j++;
		if (!s.empty())
			s += ",";
		s += std::to_string(i);
		if (j > i)
			s += "-" + std::to_string(j);
		i = j + 1;
	}
	return s.empty() ? "none" : s;
}

/* Aborts l with a message (the first one wins) and wakes every waiter, so
 * each thread leaves at its next shim call. */
void abort_launch(launch *l, const std::string &why)
{
	{
		std::lock_guard<std::mutex> g(l->mu);
		if (!l->failed) {
			l->failed = true;
			l->why = why;
		}
	}
	for (auto &b : l->blocks) {
		{
			std::lock_guard<std::mutex> g(b->mu);
		}
		b->cv.notify_all();
		for (auto &w : b->warps) {
			{
				std::lock_guard<std::mutex> g(w->mu);
			}
			w->cv.notify_all();
		}
	}
	l->cv.notify_all();
}

/* Notes the shim call the calling thread is in; it stays noted after the
 * call returns, so a thread polling between sleeps reports __nanosleep. */
void set_waiting(const char *what) { __atomic_store_n(&self->waiting, what, __ATOMIC_RELAXED); }

bool is_aborted(launch *l)
{
	std::lock_guard<std::mutex> g(l->mu);
	return l->failed;
}

/* A rule of the model was broken by the calling thread: abort and leave. */
[[noreturn]] void fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	thread *t = self;
	char where[160];
	snprintf(where, sizeof where, "kernel %s, block %u, warp %u, lane %u: ", t->l->kernel.c_str(), t->b->index,
		 t->w->index, t->lane);
	abort_launch(t->l, std::string(where) + msg);
	throw aborted{};
}

void check_aborted()
{
	if (is_aborted(self->l))
		throw aborted{};
}

/* The warp operations: the lanes of mask meet; each leaves its value and
 * gets result(lane, values) computed over all of them. */
template <class F> uint64_t warp_op(const char *op, uint32_t mask, uint64_t v, F result)
{
	thread *t = self;
	warp *w = t->w;
	uint32_t me = 1u << t->lane;
	if (!(mask & me))
		fail("%s(mask %#x) does not name the calling lane", op, mask);
	if (mask & ~w->exists)
		fail("%s(mask %#x) names lanes %s, which this warp does not have (block of %u threads): a warp "
		     "operation over a short warp needs a mask of the lanes it has",
		     op, mask, lanes_str(mask & ~w->exists).c_str(), blockDim.x * blockDim.y * blockDim.z);
	std::unique_lock<std::mutex> g(w->mu);
	set_waiting(op);
	for (;;) {
		if (is_aborted(t->l))
			throw aborted{};
		if (!w->op)
			break;
		if (!w->draining && w->mask == mask && w->op == op)
			break; /* join the operation being gathered */
		if (!w->draining && (w->mask & mask)) {
			std::string waiting = lanes_str(w->arrived); /* read under the lock */
			const char *other = w->op;
			uint32_t other_mask = w->mask;
			g.unlock();
			fail("%s(mask %#x) while lanes %s wait in %s(mask %#x): the lanes of a warp operation must all "
			     "call the same operation with the same mask",
			     op, mask, waiting.c_str(), other, other_mask);
		}
		w->cv.wait(g); /* another group's operation, or results being read */
	}
	if (uint32_t gone = mask & ~w->live) {
		g.unlock();
		fail("%s(mask %#x) names lanes %s, which have returned", op, mask, lanes_str(gone).c_str());
	}
	if (!w->op)
		w->op = op, w->mask = mask, w->arrived = 0;
	w->arrived |= me;
	w->val[t->lane] = v;
	uint64_t gen = w->gen;
	if (w->arrived == mask) {
		for (unsigned i = 0; i < 32; i++)
			if (mask >> i & 1)
				w->out[i] = result(i, w->val);
		w->draining = true, w->departed = 0;
		w->cv.notify_all();
	} else {
		while (!(w->draining && w->gen == gen)) {
			if (is_aborted(t->l))
				throw aborted{};
			w->cv.wait(g);
		}
	}
	uint64_t r = w->out[t->lane];
	w->departed |= me;
	if (w->departed == mask) {
		w->op = nullptr, w->draining = false, w->gen++;
		w->cv.notify_all();
	}
	return r;
}

/* A lane returned: a warp operation still gathering lanes can no longer
 * complete if it names this one. */
void lane_returned(thread *t)
{
	warp *w = t->w;
	char msg[256] = "";
	{
		std::lock_guard<std::mutex> g(w->mu);
		w->live &= ~(1u << t->lane);
		if (w->op && !w->draining && (w->mask >> t->lane & 1))
			snprintf(msg, sizeof msg,
				 "kernel %s, block %u, warp %u: lane %u returned while lanes %s wait for it in %s(mask %#x)",
				 t->l->kernel.c_str(), t->b->index, w->index, t->lane, lanes_str(w->arrived).c_str(), w->op,
				 w->mask);
	}
	if (msg[0])
		abort_launch(t->l, msg);
	block *b = t->b;
	std::lock_guard<std::mutex> g(b->mu);
	b->live--;
	if (b->arrived > 0 && b->arrived == b->live) {
		b->arrived = 0, b->gen++;
		b->cv.notify_all();
	}
}

void *thread_main(void *arg)
{
	thread *t = (thread *)arg;
	self = t;
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* __nanosleep(100) must not take 50 us */
	threadIdx = t->tid;
	blockIdx = t->b->idx;
	blockDim = t->l->bdim;
	gridDim = t->l->grid;
	try {
		t->l->entry(t->l->args.data());
	} catch (aborted &) {
	}
	lane_returned(t);
	__atomic_store_n(&t->returned, true, __ATOMIC_RELAXED);
	launch *l = t->l;
	std::lock_guard<std::mutex> g(l->mu);
	if (--l->running == 0)
		l->cv.notify_all();
	return nullptr;
}

long long now_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

} // namespace

/* The happens-before edges of the protocol that ThreadSanitizer cannot see,
 * because their other end is the loop (Go and io_uring, not instrumented);
 * megaio_device.cuh says which edge each call stands for. Nothing without
 * ThreadSanitizer. */
inline void hb_release(void *p)
{
#ifdef MEGAIO_CPU_TSAN
	__tsan_release(p);
#else
	(void)p;
#endif
}
inline void hb_acquire(void *p)
{
#ifdef MEGAIO_CPU_TSAN
	__tsan_acquire(p);
#else
	(void)p;
#endif
}

inline unsigned lane_id() { return self->lane; }

/* The block's copy of the variable declared at call site tag. */
template <class T> T &block_shared(const void *tag)
{
	static_assert(std::is_trivially_destructible_v<T>, "block-shared storage is raw memory, as on a GPU");
	block *b = self->b;
	std::lock_guard<std::mutex> g(b->mu);
	void *&p = b->shared[tag];
	if (!p) {
		p = ::operator new(sizeof(T));
		memset(p, 0, sizeof(T));
	}
	return *static_cast<T *>(p);
}

inline long long globaltimer() { return now_ns(); }

/* What a shuffle returns when it reads a lane its mask does not name (CUDA:
 * undefined): a value no sum or count comes out right with. */
constexpr uint64_t undefined_value = 0xbad0bad0bad0bad0ull;

} // namespace megaio_cpu

/* ---- CUDA's device functions, as the model above describes ---- */

static inline void __syncthreads()
{
	using namespace megaio_cpu;
	thread *t = self;
	block *b = t->b;
	std::unique_lock<std::mutex> g(b->mu);
	if (is_aborted(t->l))
		throw aborted{};
	uint64_t gen = b->gen;
	set_waiting("__syncthreads");
	if (++b->arrived == b->live) {
		b->arrived = 0, b->gen++;
		b->cv.notify_all();
	} else {
		while (b->gen == gen) {
			if (is_aborted(t->l))
				throw aborted{};
			b->cv.wait(g);
		}
	}
}

static inline unsigned __activemask()
{
	using namespace megaio_cpu;
	thread *t = self;
	if (t->l->mode == MEGAIO_CPU_MASK_CALLER)
		return 1u << t->lane;
	std::lock_guard<std::mutex> g(t->w->mu);
	return t->w->live;
}

static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
	megaio_cpu::warp_op("__syncwarp", mask, 0, [](unsigned, const uint64_t *) { return (uint64_t)0; });
}

template <class T> static inline uint64_t megaio_cpu_bits(T v)
{
	static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "a shuffled value is at most 8 bytes");
	uint64_t b = 0;
	memcpy(&b, &v, sizeof v);
	return b;
}
template <class T> static inline T megaio_cpu_from_bits(uint64_t b)
{
	T v;
	memcpy(&v, &b, sizeof v);
	return v;
}

template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
	uint32_t m = mask;
	uint64_t r = megaio_cpu::warp_op("__shfl_sync", mask, megaio_cpu_bits(v), [&](unsigned lane, const uint64_t *val) {
		unsigned from = (lane & ~(unsigned)(width - 1)) + ((unsigned)src & (unsigned)(width - 1));
		return m >> from & 1 ? val[from] : megaio_cpu::undefined_value;
	});
	return megaio_cpu_from_bits<T>(r);
}

template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
	uint32_t m = mask;
	uint64_t r = megaio_cpu::warp_op("__shfl_down_sync", mask, megaio_cpu_bits(v), [&](unsigned lane, const uint64_t *val) {
		unsigned from = lane + delta;
		if (from >= 32 || (from & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1)))
			return val[lane]; /* past the segment: the lane keeps its own */
		return m >> from & 1 ? val[from] : megaio_cpu::undefined_value;
	});
	return megaio_cpu_from_bits<T>(r);
}

static inline unsigned __ballot_sync(unsigned mask, int pred)
{
	return (unsigned)megaio_cpu::warp_op("__ballot_sync", mask, pred != 0, [&](unsigned, const uint64_t *val) {
		uint64_t b = 0;
		for (unsigned i = 0; i < 32; i++)
			if ((mask >> i & 1) && val[i])
				b |= 1ull << i;
		return b;
	});
}

static inline void __nanosleep(unsigned ns)
{
	megaio_cpu::check_aborted();
	megaio_cpu::set_waiting("__nanosleep");
	struct timespec ts = {0, (long)ns};
	nanosleep(&ts, nullptr);
	megaio_cpu::check_aborted();
}

static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }

/* Device atomics are relaxed: so are these. */
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
	return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

/* Memory fences: sequentially consistent on the host, at least as strong as
 * the GPU's. (ThreadSanitizer does not model a fence alone: a kernel run
 * under it should publish through atomics, as the protocol does.) */
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T> static inline T min(T a, T b) { return b < a ? b : a; }
template <class T> static inline T max(T a, T b) { return a < b ? b : a; }

/* Names a kernel for the launcher; after its definition. */
#define MEGAIO_CPU_KERNEL(name)                                                                                        \
	static ::megaio_cpu::registrar megaio_cpu_registrar_##name(                                                    \
	    #name, [](const uint64_t *a) { ::megaio_cpu::invoke(name, a); }, ::megaio_cpu::arity(name))

/* Block-shared storage: one copy per block, like a __shared__ variable. */
#define MEGAIO_BLOCK_SHARED(T, name)                                                                                   \
	static const char megaio_cpu_tag_##name = 0;                                                                   \
	megaio_id_t<T> &name = ::megaio_cpu::block_shared<megaio_id_t<T>>(&megaio_cpu_tag_##name)

/* ---- The launcher's entry points (C ABI, for megaio's Go loader) ---- */

namespace megaio_cpu {
/* The caller (Go) calls the entry points from any of its OS threads and
 * orders the calls itself, where ThreadSanitizer cannot see: each call
 * acquires what every earlier call released. So a launch's threads happen
 * before what its caller does after the launch ended (the join is inside
 * megaio_cpu_release), such as reusing its memory for the next launch. */
inline char handoff_token;
struct handoff {
	handoff() { hb_acquire(&handoff_token); }
	~handoff() { hb_release(&handoff_token); }
};
} // namespace megaio_cpu

extern "C" {

__attribute__((visibility("default"))) int megaio_cpu_abi(void) { return MEGAIO_CPU_ABI; }

/* Starts kernel on grid x block threads with args. Returns 0 and the launch
 * in *out, or -1 with a message (unknown kernel, argument count, shape,
 * thread creation). */
__attribute__((visibility("default"))) int megaio_cpu_launch(const char *kernel, const unsigned grid[3],
							     const unsigned blk[3], const uint64_t *args, int nargs,
							     int mode, void **out, char *msg, size_t len)
{
	using namespace megaio_cpu;
	handoff h;
	std::unique_lock<std::mutex> rg(registry_mu);
	const kernel_entry *k = nullptr;
	for (auto &e : registry())
		if (strcmp(e.name, kernel) == 0)
			k = &e;
	if (!k) {
		std::string names;
		for (auto &e : registry())
			names += (names.empty() ? "" : ", ") + std::string(e.name);
		snprintf(msg, len, "no kernel %s in this library (it has: %s; name each with MEGAIO_CPU_KERNEL)", kernel,
			 names.empty() ? "none" : names.c_str());
		return -1;
	}
	if (k->nargs != nargs) {
		snprintf(msg, len, "kernel %s takes %d arguments, %d given", kernel, k->nargs, nargs);
		return -1;
	}
	unsigned long long per_block = (unsigned long long)blk[0] * blk[1] * blk[2];
	unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
	if (per_block == 0 || blocks == 0 || per_block > 1024 || blocks * per_block > 16384) {
		snprintf(msg, len,
			 "kernel %s: grid %ux%ux%u of blocks %ux%ux%u: want 1 to 1024 threads a block, at most 16384 "
			 "threads in all (one OS thread each)",
			 kernel, grid[0], grid[1], grid[2], blk[0], blk[1], blk[2]);
		return -1;
	}
	if (mode != MEGAIO_CPU_MASK_LIVE && mode != MEGAIO_CPU_MASK_CALLER) {
		snprintf(msg, len, "unknown __activemask mode %d", mode);
		return -1;
	}
	kernel_entry entry = *k;
	rg.unlock();
	launch *l = new launch;
	l->kernel = kernel;
	l->entry = entry.call;
	l->args.assign(args, args + nargs);
	l->grid = {grid[0], grid[1], grid[2]};
	l->bdim = {blk[0], blk[1], blk[2]};
	l->mode = mode;
	l->threads.resize(blocks * per_block);
	unsigned nwarps = (unsigned)((per_block + 31) / 32);
	for (unsigned long long bi = 0; bi < blocks; bi++) {
		auto b = std::make_unique<block>();
		b->index = (unsigned)bi;
		b->idx = {(unsigned)(bi % grid[0]), (unsigned)(bi / grid[0] % grid[1]), (unsigned)(bi / grid[0] / grid[1])};
		b->live = (unsigned)per_block;
		for (unsigned wi = 0; wi < nwarps; wi++) {
			auto w = std::make_unique<warp>();
			w->index = wi;
			unsigned n = (unsigned)(per_block - 32ull * wi < 32 ? per_block - 32ull * wi : 32);
			w->exists = w->live = n == 32 ? 0xffffffffu : (1u << n) - 1;
			b->warps.push_back(std::move(w));
		}
		for (unsigned long long ti = 0; ti < per_block; ti++) {
			thread &t = l->threads[bi * per_block + ti];
			t.l = l, t.b = b.get(), t.linear = (unsigned)ti, t.lane = (unsigned)(ti % 32);
			t.w = b->warps[ti / 32].get();
			t.tid = {(unsigned)(ti % blk[0]), (unsigned)(ti / blk[0] % blk[1]), (unsigned)(ti / blk[0] / blk[1])};
		}
		l->blocks.push_back(std::move(b));
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 1 << 20);
	std::unique_lock<std::mutex> g(l->mu); /* no thread ends before all are counted */
	for (auto &t : l->threads) {
		int e = pthread_create(&t.th, &attr, thread_main, &t);
		if (e != 0) {
			g.unlock();
			abort_launch(l, std::string("could not start a thread: ") + strerror(e));
			g.lock();
			break;
		}
		t.started = true;
		l->running++;
	}
	g.unlock();
	pthread_attr_destroy(&attr);
	*out = l;
	return 0;
}

/* Waits up to timeout_ns (negative: forever) for the launch to end.
 * Returns 0 when every thread returned, 1 when threads still run, 2 when
 * it ended after an abort (msg says why). */
__attribute__((visibility("default"))) int megaio_cpu_wait(void *lp, long long timeout_ns, char *msg, size_t len)
{
	using namespace megaio_cpu;
	handoff h;
	launch *l = (launch *)lp;
	std::unique_lock<std::mutex> g(l->mu);
	long long deadline = now_ns() + timeout_ns;
	while (l->running > 0) {
		if (timeout_ns < 0) {
			l->cv.wait(g);
			continue;
		}
		long long left = deadline - now_ns();
		if (left <= 0)
			return 1;
		l->cv.wait_for(g, std::chrono::nanoseconds(left));
	}
	if (l->failed) {
		snprintf(msg, len, "%s", l->why.c_str());
		return 2;
	}
	return 0;
}

/* How many of the launch's threads have returned: a waiter's measure of
 * progress. */
__attribute__((visibility("default"))) unsigned megaio_cpu_returned(void *lp)
{
	using namespace megaio_cpu;
	handoff h;
	launch *l = (launch *)lp;
	std::lock_guard<std::mutex> g(l->mu);
	return (unsigned)l->threads.size() - l->running;
}

/* What the threads still running are doing, for a stuck launch's report. */
__attribute__((visibility("default"))) void megaio_cpu_describe(void *lp, char *msg, size_t len)
{
	using namespace megaio_cpu;
	handoff h;
	launch *l = (launch *)lp;
	std::map<std::string, unsigned> counts;
	std::string detail;
	for (auto &b : l->blocks)
		for (auto &w : b->warps) {
			std::lock_guard<std::mutex> g(w->mu);
			if (w->op && !w->draining && detail.size() < 400)
				detail += "; block " + std::to_string(b->index) + " warp " + std::to_string(w->index) +
					  ": lanes " + lanes_str(w->arrived) + " wait in " + w->op + " for lanes " +
					  lanes_str(w->mask & ~w->arrived);
		}
	unsigned live = 0;
	for (auto &b : l->blocks) {
		std::lock_guard<std::mutex> g(b->mu);
		live += b->live;
	}
	for (auto &t : l->threads) {
		if (__atomic_load_n(&t.returned, __ATOMIC_RELAXED))
			continue;
		const char *w = __atomic_load_n(&t.waiting, __ATOMIC_RELAXED);
		counts[w ? w : "kernel code (no shim call yet)"]++;
	}
	std::string s = std::to_string(live) + " of " + std::to_string(l->threads.size()) + " threads not returned";
	for (auto &kv : counts)
		s += ", " + std::to_string(kv.second) + " last seen in " + kv.first;
	snprintf(msg, len, "%s%s", s.c_str(), detail.c_str());
}

/* Asks every thread to leave at its next shim call. */
__attribute__((visibility("default"))) void megaio_cpu_abort(void *lp, const char *why)
{
	megaio_cpu::handoff h;
	megaio_cpu::abort_launch((megaio_cpu::launch *)lp, why);
}

/* Frees an ended launch: 0, or -1 (nothing freed) while threads run. */
__attribute__((visibility("default"))) int megaio_cpu_release(void *lp)
{
	using namespace megaio_cpu;
	handoff h;
	launch *l = (launch *)lp;
	{
		std::lock_guard<std::mutex> g(l->mu);
		if (l->running > 0)
			return -1;
	}
	for (auto &t : l->threads)
		if (t.started)
			pthread_join(t.th, nullptr);
	delete l;
	return 0;
}

} /* extern "C" */

#endif /* MEGAIO_CPU_H */
