// Package megaio lets a persistent GPU kernel (a "megakernel") read and
// write files while it runs.
//
// What has been proven where: the host side (queues, the loop, the Client)
// runs in every test; the device half (include/megaio_device.cuh and the
// example kernels) executes on CPU threads against a real loop (the CPU
// launcher: package cpukernel), under ThreadSanitizer too; nothing has executed
// on a GPU yet, so the GPU paths (MapForGPU, NewDeviceBuffer, GPUDirect
// Storage, the bounce path on a real driver) are compiled and checked, not
// proven (docs/gpu-results.md).
//
// Producers (GPU threads, or host threads in tests and tools) publish IO
// requests into a Queue in page-aligned host memory. A Loop, one goroutine
// locked to its OS thread, claims them, runs them through io_uring into
// registered buffers, and writes each result back into the queue, where the
// producer polls for it. The queue's memory layout and protocol are defined
// by include/megaio.h, which C, C++ and CUDA producers include; HostProducer
// speaks the same protocol from Go.
//
// Go code that only wants file bytes in host or device memory uses a
// Client, which makes the queue, the loop and the producer itself:
//
//	c, _ := megaio.NewClient(megaio.ClientConfig{}) // MEGAIO_* variables fill unset fields
//	f, _ := c.OpenFile("data.bin", os.O_RDONLY, 0)
//	n, err := f.ReadAt(p, off)                        // io.ReaderAt
//	n, err = f.ReadAtAsync(buf.Bytes(), off).Wait(ctx) // buf from c.NewBuffer: no copy
//	c.Close(ctx)
//
// A session with the queue itself, as a GPU kernel's host side does:
//
//	q, _ := megaio.NewQueue(megaio.QueueConfig{Capacity: 4096})
//	l, _ := megaio.NewLoop(q, megaio.Config{})   // the ring is set up here
//	fh, _ := l.RegisterFile(f)                    // producers name files by handle only
//	buf, _ := l.NewBuffer(1<<20, megaio.BufferOptions{})
//	dh, _ := l.AddDestination(buf, 0, 1<<20)      // a bounds-checked region of buf
//	l.Start()
//	... producers publish requests naming fh and dh ...
//	l.Stop(ctx)  // nil or the deadline: the kernel can no longer write into buf (ErrStopIncomplete: not yet)
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
// wait while IO is in flight, a spin-then-sleep backoff when idle. A loop
// may serve several queues (multiqueue.go); the device engine (devengine.go)
// serves destinations in GPU memory as a guest of the cycle.
//
// # Vocabulary
//
// One word per meaning, in the code and its comments:
//
//   - ticket: a request's place in its queue's order; it picks the slot
//     (ticket mod capacity).
//   - slot: a request's 64 bytes in the ring.
//   - publish: a producer's last store into a slot (seq = ticket+1), which
//     hands the request to the loop.
//   - claim: the loop copies a published request out of its slot, which
//     frees the slot (claim_head says how far it got).
//   - completion, completion id: where a request's result goes; its issuer
//     names the id and reads it back.
//   - record: the loop's state of a claimed request that needs IO, from
//     claim (admit) to finish. A request that waits for a free record waits
//     in its queue's list (waiting).
//   - admit: check a claimed request; bad ones complete at once, the rest
//     take a record.
//   - dispatch: turn records into SQEs, the backend's requests.
//   - lane: one backend and its batch of SQEs (the FUSE lane is a second).
//   - flush: one call into the backend: submit the batch, reap completions.
//   - reap: take completions from the backend; reaped: handle one.
//   - complete: write a result into its completion (result, then done).
//   - finish: complete a record's request and free the record.
//   - piece: a part of a device request's transfer (a staging chunk's IO
//     and copy, or one GDS IO); a piece ends, then its record finishes.
//   - stop: Stop began: requests claimed from now on complete with
//     -ECANCELED. deadline: Stop's ctx ended. cancel: end the requests in
//     flight early, at the deadline (cancelling, cancelIssued). abandon:
//     complete a request that never reached the kernel, at the deadline.
//   - fail: the backend failed; every request completes with -EIO.
package megaio
