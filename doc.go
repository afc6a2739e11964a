// Package megaio lets a persistent GPU kernel (a "megakernel") read and
// write files while it runs.
//
// Producers (GPU threads, or host threads in tests and tools) publish IO
// requests into a Queue in page-aligned host memory. A Loop, one goroutine
// locked to its OS thread, claims them, runs them through io_uring into
// registered buffers, and writes each result back into the queue, where the
// producer polls for it. The queue's memory layout and protocol are defined
// by include/megaio.h, which C, C++ and CUDA producers include; HostProducer
// speaks the same protocol from Go.
//
// A session:
//
//	q, _ := megaio.NewQueue(megaio.QueueConfig{Capacity: 4096})
//	l, _ := megaio.NewLoop(q, megaio.Config{})   // the ring is set up here
//	fh, _ := l.RegisterFile(f)                    // producers name files by handle only
//	buf, _ := l.NewBuffer(1<<20, megaio.BufferOptions{})
//	dh, _ := l.AddDestination(buf, 0, 1<<20)      // a bounds-checked region of buf
//	l.Start()
//	... producers publish requests naming fh and dh ...
//	l.Stop(ctx)  // returns once the kernel can no longer write into buf
//	l.Close()
//	q.Close()
//
// Results are bytes transferred or a negative errno (Result.Err turns one
// into an error that errors.Is can match against unix.EBADF and friends).
// A bad request fails its own completion and never stops the loop; a short
// transfer is continued until the full length or EOF, so a READ result
// below its length means EOF. See include/megaio.h for the errno table.
//
// The cycle (loop.go) is: drain completions, claim new requests, dispatch
// them, flush the batch to the kernel in one cgo call, and wait - a bounded
// wait while IO is in flight, a spin-then-sleep backoff when idle.
package megaio
