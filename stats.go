package megaio

import (
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stats are the loop's counters. The loop counts in memory only its thread
// touches and publishes a copy every few hundred cycles, before it sleeps and
// when it stops, so reading them never takes a lock or slows the cycle.
type Stats struct {
	Backend       string                // what serves the IO, e.g. "io_uring (sq 256, cq 2048, SINGLE_ISSUER|DEFER_TASKRUN)"
	BackendReason string                // why that backend, e.g. "io_uring refused (auto fell back): ..."
	Requests      [numOps]uint64        // claimed, by op (index with Op)
	BadOps        uint64                // claimed with an unknown op
	BadIDs        uint64                // claimed with a completion id outside the table: dropped, not run
	Waited        uint64                // claimed requests that waited in the loop for a record
	Completed     uint64                // completions published
	OK            uint64                // completions with a result >= 0
	Errors        map[unix.Errno]uint64 // completions with a negative result, by errno
	Bytes         uint64                // bytes moved by READ and WRITE
	ShortIO       uint64                // continuations after a short transfer
	InlineReads   uint64                // READs from memory-backed files the loop copied itself (Config.InlineMax)
	SQFullStalls  uint64                // cycles in which claimed requests waited for room in the ring
	MaxInflight   uint64                // most requests in the backend at once
	Sleeps        uint64                // idle sleeps
	DeepSleeps    uint64                // of those, deep-idle sleeps (Backoff.IdleAfter)
	DeepWakes     uint64                // deep-idle sleeps cut short by a host producer's Submit, Stop or a command
	Retries       uint64                // io_uring_enter calls answered EINTR, EAGAIN or EBUSY
	Latency       Histogram             // claim to completion
	Device        DeviceStats           // device destinations
	Queues        []QueueStats          // by queue, in the order of Loop.Queues
}

// QueueStats are the counters of one queue a loop serves (the loop's own
// are their sums, plus the requests of queues it no longer serves).
type QueueStats struct {
	Claimed   uint64 // requests claimed from the queue's ring
	Completed uint64 // completions published into its table
	BadIDs    uint64 // claimed with a completion id outside its table: dropped, not run
	Waited    uint64 // claimed requests that waited in the loop for a record
	InFlight  uint64 // claimed and not yet completed (Claimed - Completed - BadIDs)
	// MaxOvertaken is the most records that went to other queues in a
	// row while this queue had a request waiting for one: at most the
	// number of queues less one, however hard the others flood
	// (multiqueue.go), unless a FENCE of another queue retired meanwhile and
	// freed its own.
	MaxOvertaken uint64
	Latency      Histogram // claim to completion
}

// DeviceStats count the requests whose destination is device memory, by
// the path that served them.
type DeviceStats struct {
	Setup          string // the device paths' set-up, e.g. "device: bounce (16 x 1024 KiB staging chunks) + GDS (...)"; "" before the first device buffer
	GDSRequests    uint64 // requests whose aligned body went through GPUDirect Storage
	SplitRequests  uint64 // of those, requests with an unaligned head or tail through the bounce path
	BounceRequests uint64 // requests served by the bounce path alone
	GDSBytes       uint64 // bytes moved by GDS
	BounceBytes    uint64 // bytes moved through staging chunks
	StagingWaits   uint64 // requests that waited for a free staging chunk or GDS batch entry
	GDSRetries     uint64 // batch submissions cuFile answered "queue full" or "retry later"
	GDSGiveUps     uint64 // batches whose IOs failed with -EIO after Device.GDSRetryLimit such answers in a row
	Errors         uint64 // CUDA copy and cuFile errors (the last one: Loop.DeviceErr)
}

// Histogram counts durations in buckets of a quarter of a power of two
// (four buckets per octave, each about 19% wide). Percentile interpolates
// within the bucket that holds the rank, so it is never off by more than
// that bucket's width, and much less when the samples near it are spread
// evenly.
type Histogram struct {
	Buckets [histBuckets]uint64
}

const histBuckets = 252

// histIndex is the bucket of v nanoseconds.
func histIndex(v uint64) int {
	if v < 8 {
		return int(v)
	}
	e := bits.Len64(v) - 1 // floor(log2 v) >= 3
	return (e-1)*4 + int((v>>(e-2))&3)
}

// histLower is the smallest value of bucket i.
func histLower(i int) uint64 {
	if i < 8 {
		return uint64(i)
	}
	e, m := i/4+1, uint64(i%4)
	return (4 + m) << (e - 2)
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Buckets {
		n += c
	}
	return n
}

// Mean is the samples' mean, from the buckets' lower bounds (so up to 19%
// low), or 0 with no samples.
func (h *Histogram) Mean() time.Duration {
	var n, sum float64
	for i, c := range h.Buckets {
		n += float64(c)
		sum += float64(c) * float64(histLower(i))
	}
	if n == 0 {
		return 0
	}
	return time.Duration(sum / n)
}

// Percentile returns the p-th percentile (0 < p <= 100), or 0 with no
// samples: the bucket holding that rank, with the rank's place among the
// bucket's samples taken as its place between the bucket's bounds (the
// samples spread evenly in it, as Prometheus's histogram_quantile assumes).
func (h *Histogram) Percentile(p float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(p / 100 * float64(n))
	if rank >= n {
		rank = n - 1
	}
	var seen uint64
	for i, c := range h.Buckets {
		if seen+c > rank {
			lo, hi := histLower(i), histLower(i) // the last bucket has no upper bound
			if i+1 < histBuckets {
				hi = histLower(i + 1)
			}
			frac := (float64(rank-seen) + 0.5) / float64(c)
			return time.Duration(float64(lo) + frac*float64(hi-lo))
		}
		seen += c
	}
	return time.Duration(histLower(histBuckets - 1))
}

// The counters. Each is described once, as a field of a counters struct
// (counters, devCounters, queueCounters), and the struct's stats method
// says where it shows in Stats. A counters struct holds only uint64 words
// (fields and arrays of them; TestCounterLayout checks), so the loop
// publishes it word by word without naming a field (publishedCounters):
// adding a counter is a field and its place in stats, and
// TestCounterLayout fails when a word does not reach Stats exactly once.

// counters are the loop's own, touched only by its thread.
type counters struct {
	requests     [numOps]uint64
	badOps       uint64
	badIDs       uint64
	waited       uint64
	completed    uint64
	ok           uint64
	errnos       [maxErrno + 1]uint64 // index 0: errnos beyond maxErrno
	bytes        uint64
	shortIO      uint64
	inlineReads  uint64
	sqFullStalls uint64
	maxInflight  uint64
	sleeps       uint64
	deepSleeps   uint64
	deepWakes    uint64
	retries      uint64
	latency      [histBuckets]uint64
	dev          devCounters // the device engine's, copied in before each publication
}

// devCounters are the device engine's (devengine.go), touched only by the
// loop's thread.
type devCounters struct {
	gdsReqs, splitReqs, bounceReqs uint64
	gdsBytes, bounceBytes          uint64
	stagingWaits                   uint64
	gdsRetries, gdsGiveUps         uint64
	errors                         uint64
	bytes, shortIO                 uint64 // shown in the loop's Bytes and ShortIO
}

// queueCounters are one served queue's, touched only by the loop's thread.
type queueCounters struct {
	claimed, completed, badIDs, waited, maxOvertaken uint64
	latency                                          [histBuckets]uint64
}

const maxErrno = 133

// complete counts one completion; bucket is its latency's histIndex.
func (c *counters) complete(result int64, bucket int) {
	c.completed++
	if result >= 0 {
		c.ok++
	} else if -result <= maxErrno {
		c.errnos[-result]++
	} else {
		c.errnos[0]++
	}
	c.latency[bucket]++
}

// stats says where each counter shows in Stats.
func (c *counters) stats() Stats {
	s := Stats{Requests: c.requests, BadOps: c.badOps, BadIDs: c.badIDs, Waited: c.waited, Completed: c.completed,
		OK: c.ok, Errors: map[unix.Errno]uint64{}, Bytes: c.bytes + c.dev.bytes, ShortIO: c.shortIO + c.dev.shortIO,
		InlineReads:  c.inlineReads,
		SQFullStalls: c.sqFullStalls, MaxInflight: c.maxInflight, Sleeps: c.sleeps, DeepSleeps: c.deepSleeps,
		DeepWakes: c.deepWakes,
		Retries:   c.retries,
		Latency:   Histogram{Buckets: c.latency}}
	for e, v := range c.errnos {
		if v != 0 {
			s.Errors[unix.Errno(e)] = v // errno 0: beyond maxErrno
		}
	}
	d := &c.dev
	s.Device = DeviceStats{GDSRequests: d.gdsReqs, SplitRequests: d.splitReqs, BounceRequests: d.bounceReqs,
		GDSBytes: d.gdsBytes, BounceBytes: d.bounceBytes, StagingWaits: d.stagingWaits, GDSRetries: d.gdsRetries,
		GDSGiveUps: d.gdsGiveUps, Errors: d.errors}
	return s
}

// stats says where each counter shows in QueueStats.
func (c *queueCounters) stats() QueueStats {
	s := QueueStats{Claimed: c.claimed, Completed: c.completed, BadIDs: c.badIDs, Waited: c.waited,
		MaxOvertaken: c.maxOvertaken, Latency: Histogram{Buckets: c.latency}}
	if done := c.completed + c.badIDs; c.claimed > done { // a snapshot may mix two publications
		s.InFlight = c.claimed - done
	}
	return s
}

// counterWords views a counters struct as its words.
func counterWords[T counters | queueCounters](c *T) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(c)), unsafe.Sizeof(*c)/8)
}

// publishedCounters is the copy other goroutines read: each word is stored
// and loaded atomically. A snapshot may mix two publications; the loop
// publishes once more when it stops, so a stopped loop's Stats are exact.
type publishedCounters[T counters | queueCounters] struct {
	words []atomic.Uint64
}

func newPublished[T counters | queueCounters]() publishedCounters[T] {
	var c T
	return publishedCounters[T]{words: make([]atomic.Uint64, len(counterWords(&c)))}
}

// publish copies c into p. A word that did not change is not stored, so
// readers' cache lines stay shared.
func (p *publishedCounters[T]) publish(c *T) {
	for i, v := range counterWords(c) {
		if w := &p.words[i]; w.Load() != v {
			w.Store(v)
		}
	}
}

// load reads p.
func (p *publishedCounters[T]) load() (c T) {
	words := counterWords(&c)
	for i := range words {
		words[i] = p.words[i].Load()
	}
	return c
}

// Record adds one sample of d.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.Buckets[histIndex(uint64(d))]++
}
