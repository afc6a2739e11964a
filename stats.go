package megaio

import (
	"math/bits"
	"sync/atomic"
	"time"

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
	SQFullStalls  uint64                // cycles in which claimed requests waited for room in the ring
	MaxInflight   uint64                // most requests in the backend at once
	Sleeps        uint64                // idle sleeps
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
	// (queues.go), unless a FENCE of another queue retired meanwhile and
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
// (four buckets per octave): percentiles are within 19% of the truth.
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

// Percentile returns the lower bound of the bucket holding the p-th
// percentile (0 < p <= 100), or 0 with no samples.
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
		seen += c
		if seen > rank {
			return time.Duration(histLower(i))
		}
	}
	return time.Duration(histLower(histBuckets - 1))
}

// counters are the loop's own copy, touched only by its thread.
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
	sqFullStalls uint64
	maxInflight  uint64
	sleeps       uint64
	retries      uint64
	latency      [histBuckets]uint64

	devGDSReqs, devSplitReqs, devBounceReqs, devGDSBytes, devBounceBytes uint64
	devStagingWaits, devGDSRetries, devGDSGiveUps, devErrors             uint64
}

const maxErrno = 133

func (c *counters) complete(result int64, latency int64) {
	c.completed++
	if result >= 0 {
		c.ok++
	} else if -result <= maxErrno {
		c.errnos[-result]++
	} else {
		c.errnos[0]++
	}
	if latency < 0 {
		latency = 0
	}
	c.latency[histIndex(uint64(latency))]++
}

// published is the copy other goroutines read: each word is stored and
// loaded atomically. A snapshot may mix two publications; the loop
// publishes once more when it stops, so a stopped loop's Stats are exact.
type published struct {
	words [unsafeCountersWords]atomic.Uint64
}

const unsafeCountersWords = numOps + 3 + 2 + maxErrno + 1 + 6 + histBuckets + 9 // the last: the device counters

// publish copies c into p.
func (p *published) publish(c *counters) {
	i := 0
	put := func(v uint64) {
		if p.words[i].Load() != v {
			p.words[i].Store(v)
		}
		i++
	}
	for _, v := range c.requests {
		put(v)
	}
	put(c.badOps)
	put(c.badIDs)
	put(c.waited)
	put(c.completed)
	put(c.ok)
	for _, v := range c.errnos {
		put(v)
	}
	put(c.bytes)
	put(c.shortIO)
	put(c.sqFullStalls)
	put(c.maxInflight)
	put(c.sleeps)
	put(c.retries)
	for _, v := range c.latency {
		put(v)
	}
	for _, v := range [...]uint64{c.devGDSReqs, c.devSplitReqs, c.devBounceReqs, c.devGDSBytes, c.devBounceBytes,
		c.devStagingWaits, c.devGDSRetries, c.devGDSGiveUps, c.devErrors} {
		put(v)
	}
}

// snapshot reads p into a Stats.
func (p *published) snapshot() Stats {
	var s Stats
	i := 0
	get := func() uint64 { v := p.words[i].Load(); i++; return v }
	for k := range s.Requests {
		s.Requests[k] = get()
	}
	s.BadOps = get()
	s.BadIDs = get()
	s.Waited = get()
	s.Completed = get()
	s.OK = get()
	s.Errors = map[unix.Errno]uint64{}
	for e := 0; e <= maxErrno; e++ {
		if v := get(); v != 0 {
			s.Errors[unix.Errno(e)] = v // errno 0: beyond maxErrno
		}
	}
	s.Bytes = get()
	s.ShortIO = get()
	s.SQFullStalls = get()
	s.MaxInflight = get()
	s.Sleeps = get()
	s.Retries = get()
	for k := range s.Latency.Buckets {
		s.Latency.Buckets[k] = get()
	}
	d := &s.Device
	for _, f := range [...]*uint64{&d.GDSRequests, &d.SplitRequests, &d.BounceRequests, &d.GDSBytes, &d.BounceBytes,
		&d.StagingWaits, &d.GDSRetries, &d.GDSGiveUps, &d.Errors} {
		*f = get()
	}
	return s
}

// queueCounters are one served queue's own counters, touched only by the
// loop's thread.
type queueCounters struct {
	claimed, completed, badIDs, waited, maxOvertaken uint64
	latency                                          [histBuckets]uint64
}

// publishedQueue is the copy of a queue's counters other goroutines read,
// word by word, like published.
type publishedQueue struct {
	words [5 + histBuckets]atomic.Uint64
}

func (p *publishedQueue) publish(c *queueCounters) {
	for i, v := range [...]uint64{c.claimed, c.completed, c.badIDs, c.waited, c.maxOvertaken} {
		p.words[i].Store(v)
	}
	for i, v := range c.latency {
		if w := &p.words[5+i]; w.Load() != v {
			w.Store(v)
		}
	}
}

func (p *publishedQueue) snapshot() QueueStats {
	s := QueueStats{Claimed: p.words[0].Load(), Completed: p.words[1].Load(), BadIDs: p.words[2].Load(),
		Waited: p.words[3].Load(), MaxOvertaken: p.words[4].Load()}
	for i := range s.Latency.Buckets {
		s.Latency.Buckets[i] = p.words[5+i].Load()
	}
	if done := s.Completed + s.BadIDs; s.Claimed > done { // a snapshot may mix two publications
		s.InFlight = s.Claimed - done
	}
	return s
}

// Record adds one sample of d.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.Buckets[histIndex(uint64(d))]++
}
