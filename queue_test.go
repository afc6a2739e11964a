package megaio

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/megaio/megaio/internal/clayout"
	"github.com/megaio/megaio/internal/cproducer"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }

// TestLayout pins the Go mirrors to include/megaio.h as C compiles it.
func TestLayout(t *testing.T) {
	var h queueHeader
	var r requestSlot
	var c completion
	var p producerSide
	goLayout := map[string]uint64{
		"header": uint64(unsafe.Sizeof(h)), "header.abi_version": uint64(unsafe.Offsetof(h.abiVersion)),
		"header.capacity": uint64(unsafe.Offsetof(h.capacity)), "header.first_ticket": uint64(unsafe.Offsetof(h.firstTicket)),
		"header.slots_offset": uint64(unsafe.Offsetof(h.slotsOffset)), "header.completions_offset": uint64(unsafe.Offsetof(h.completionsOffset)),
		"header.state": uint64(unsafe.Offsetof(h.state)), "header.claim_head": uint64(unsafe.Offsetof(h.claimHead)),
		"header.completions": uint64(unsafe.Offsetof(h.completions)), "header.bad_ids": uint64(unsafe.Offsetof(h.badIDs)),
		"header.last_bad_seq": uint64(unsafe.Offsetof(h.lastBadSeq)),
		"request":             uint64(unsafe.Sizeof(r)), "request.seq": uint64(unsafe.Offsetof(r.seq)), "request.op": uint64(unsafe.Offsetof(r.op)),
		"request.flags": uint64(unsafe.Offsetof(r.flags)), "request.file": uint64(unsafe.Offsetof(r.file)),
		"request.dest": uint64(unsafe.Offsetof(r.dest)), "request.completion": uint64(unsafe.Offsetof(r.completion)),
		"request.file_offset": uint64(unsafe.Offsetof(r.fileOffset)), "request.dest_offset": uint64(unsafe.Offsetof(r.destOffset)),
		"request.length": uint64(unsafe.Offsetof(r.length)), "request.tag": uint64(unsafe.Offsetof(r.tag)),
		"request.reserved1": uint64(unsafe.Offsetof(r.reserved1)),
		"completion":        uint64(unsafe.Sizeof(c)), "completion.result": uint64(unsafe.Offsetof(c.result)), "completion.done": uint64(unsafe.Offsetof(c.done)),
		"producer_side": uint64(unsafe.Sizeof(p)), "producer_side.next_ticket": uint64(unsafe.Offsetof(p.nextTicket)),
		"producer_side.capacity": uint64(unsafe.Offsetof(p.capacity)), "producer_side.completions": uint64(unsafe.Offsetof(p.completions)),
		"producer_side.claim_seen": uint64(unsafe.Offsetof(p.claimSeen)), "MAX_COMPLETIONS": maxCompletions, "EAGAIN": uint64(unix.EAGAIN),
		"MAGIC": abiMagic, "ABI_VERSION": abiVersion, "MAX_LENGTH": MaxLength,
		"OP_NOP": uint64(OpNop), "OP_READ": uint64(OpRead), "OP_WRITE": uint64(OpWrite), "OP_FENCE": uint64(OpFence), "OP_FSYNC": uint64(OpFsync),
		"EBADF": uint64(unix.EBADF), "ENXIO": uint64(unix.ENXIO), "EFAULT": uint64(unix.EFAULT), "EINVAL": uint64(unix.EINVAL),
		"E2BIG": uint64(unix.E2BIG), "EOVERFLOW": uint64(unix.EOVERFLOW), "ECANCELED": uint64(unix.ECANCELED),
		"ESHUTDOWN": uint64(unix.ESHUTDOWN), "EIO": uint64(unix.EIO),
	}
	if diff := cmp.Diff(cproducer.Layout(), goLayout); diff != "" {
		t.Errorf("Go mirror differs from include/megaio.h (-C +Go):\n%s", diff)
	}
	var s sqe
	var q cqe
	shim := map[string]uint64{"sqe": uint64(unsafe.Sizeof(s)), "sqe.user_data": uint64(unsafe.Offsetof(s.userData)),
		"sqe.off": uint64(unsafe.Offsetof(s.off)), "sqe.addr": uint64(unsafe.Offsetof(s.addr)),
		"sqe.len": uint64(unsafe.Offsetof(s.len)), "sqe.buf_index": uint64(unsafe.Offsetof(s.bufIndex)),
		"sqe.op": uint64(unsafe.Offsetof(s.op)), "sqe.flags": uint64(unsafe.Offsetof(s.flags)),
		"sqe.file": uint64(unsafe.Offsetof(s.file)),
		"cqe":      uint64(unsafe.Sizeof(q)), "cqe.user_data": uint64(unsafe.Offsetof(q.userData)), "cqe.res": uint64(unsafe.Offsetof(q.res)),
		"SQE_READ": sqeRead, "SQE_WRITE": sqeWrite, "SQE_FSYNC": sqeFsync, "SQE_RAW_FD": sqeRawFD, "SQE_NO_BUF": sqeNoBuf,
		"CANCEL_USER_DATA": cancelUserData}
	if diff := cmp.Diff(clayout.Layout(), shim); diff != "" {
		t.Errorf("Go sqe, cqe and their constants differ from csrc/backend.h (-C +Go):\n%s", diff)
	}
	if unsafe.Sizeof(cproducer.Request{}) != slotSize {
		t.Errorf("cproducer.Request is %d bytes", unsafe.Sizeof(cproducer.Request{}))
	}
}

// TestProducerSideInit: Go's and C's initial producer sides and seq values
// agree, for first tickets that wrap.
func TestProducerSideInit(t *testing.T) {
	for _, first := range []uint64{0, 5, 1<<32 - 3, ^uint64(0) - 2} {
		q, err := NewQueue(QueueConfig{Capacity: 8, FirstTicket: first})
		if err != nil {
			t.Fatal(err)
		}
		p, err := q.HostProducer()
		if err != nil {
			t.Fatal(err)
		}
		side := make([]byte, len(p.Memory()))
		if r := cproducer.InitSide(q.Memory(), side); r != 0 {
			t.Fatalf("megaio_attach = %d", r)
		}
		if !bytes.Equal(side, p.Memory()) {
			t.Errorf("first %#x: C and Go producer sides differ", first)
		}
		for s := uint64(0); s < 8; s++ {
			if got, want := q.slots[s].seq, cproducer.InitialSeq(first, 8, s); got != want {
				t.Errorf("first %#x slot %d: seq %#x, C says %#x", first, s, got, want)
			}
		}
		for i := range q.comps {
			if got, want := q.comps[i].done, cproducer.InitialDone(first); got != want {
				t.Fatalf("first %#x completion %d: done %#x, C says %#x", first, i, got, want)
			}
		}
		q.Close()
	}
}

// TestAttachQueue: a header of another ABI is refused, by Go and by C.
func TestAttachQueue(t *testing.T) {
	q, err := NewQueue(QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := AttachQueue(q.Memory()); err != nil {
		t.Fatalf("AttachQueue of a good queue: %v", err)
	}
	if r := cproducer.Attach(q.Memory()); r != 0 {
		t.Fatalf("megaio_attach of a good queue = %d", r)
	}
	for name, corrupt := range map[string]func(h *queueHeader){
		"magic":       func(h *queueHeader) { h.magic++ },
		"version":     func(h *queueHeader) { h.abiVersion = 3 },
		"v1":          func(h *queueHeader) { h.magic, h.abiVersion = 0x3151454f4947454d, 1 },
		"completions": func(h *queueHeader) { h.completions = 0 },
		"slot":        func(h *queueHeader) { h.slotSize = 128 },
		"capacity":    func(h *queueHeader) { h.capacity = 12 },
	} {
		mem, _ := unix.Mmap(-1, 0, len(q.Memory()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		copy(mem, q.Memory())
		corrupt((*queueHeader)(unsafe.Pointer(&mem[0])))
		if _, err := AttachQueue(mem); !errors.Is(err, ErrBadQueue) {
			t.Errorf("%s: AttachQueue = %v, want ErrBadQueue", name, err)
		}
		if r := cproducer.Attach(mem); r != -int(unix.EINVAL) {
			t.Errorf("%s: megaio_attach = %d, want -EINVAL", name, r)
		}
		unix.Munmap(mem)
	}
}

// runCProducers has threads C producers each READ per blocks of size block
// from fh, block k*per+i into the same offset of the destination.
func runCProducers(h *harness, fh FileHandle, threads, per int, block uint64) ([]int64, error) {
	reqs := make([]cproducer.Request, threads*per)
	for i := range reqs {
		off := uint64(i) * block
		reqs[i] = cproducer.Request{Op: uint16(OpRead), File: uint32(fh), Dest: uint32(h.dest), FileOffset: off, DestOffset: off, Length: block}
	}
	ids, err := h.p.ReserveCompletions(threads)
	if err != nil {
		return nil, err
	}
	defer h.p.ReleaseCompletions(ids)
	return cproducer.Run(h.q.Memory(), h.p.Memory(), ids, reqs, threads)
}

// TestHeader: the embedded headers are the repository's.
func TestHeader(t *testing.T) {
	for _, name := range []string{"megaio.h", "megaio_device.cuh", "megaio_cpu.h"} {
		got, err := Header(name)
		want, rerr := os.ReadFile("include/" + name)
		if err != nil || rerr != nil || !bytes.Equal(got, want) {
			t.Errorf("Header(%q): %v, %v, equal %v", name, err, rerr, bytes.Equal(got, want))
		}
	}
	if _, err := Header("nope.h"); err == nil {
		t.Error("Header of a missing file succeeded")
	}
}

// TestUncollectedTicketBlocksNobody: a goroutine that holds a completed
// ticket without collecting it blocks no other. With a queue of 4, ticket 4
// reuses ticket 0's slot, which the loop freed when it claimed ticket 0;
// ticket 0's result stays in its own completion until its issuer polls.
// (The demo's four producers, eight requests each, hung this way on ABI v1.)
func TestUncollectedTicketBlocksNobody(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 4}, Config{}, 1<<16)
	path, data := patternFile(t, tmpfsDir(t), 5*4096, 19)
	fh := h.register(path, os.O_RDONLY)
	read := func(k int) Request {
		return Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: uint64(k) * 4096, DestOffset: uint64(k) * 4096, Length: 4096}
	}
	stalled, err := h.p.Submit(read(0)) // its issuer does not collect it yet
	if err != nil {
		t.Fatal(err)
	}
	for k := 1; k < 4; k++ {
		if res := h.do(read(k)); res != 4096 {
			t.Fatalf("READ %d: %d", k, res)
		}
	}
	eventually(t, "ticket 0 to complete", func() bool { return h.l.Stats().Completed >= 4 })
	done := make(chan Ticket)
	go func() {
		tk, err := h.p.Submit(read(4)) // slot 0 again
		if err != nil {
			t.Error(err)
		}
		done <- tk
	}()
	fifth := await(t, "Submit into a slot whose previous ticket was complete but uncollected", done, loopMeters(h.l)...)
	if res, ok, err := h.p.Poll(stalled); err != nil || !ok || res != 4096 {
		t.Fatalf("the stalled ticket: %d, %v, %v", res, ok, err)
	}
	if res, err := h.p.Wait(fifth); err != nil || res != 4096 {
		t.Fatalf("the fifth READ: %d, %v", res, err)
	}
	if !bytes.Equal(h.buf.Bytes()[:5*4096], data) {
		t.Fatal("wrong bytes")
	}
}

// TestDuplicateCompletionID: two requests in flight naming one completion
// id are a producer error, and megaio.h says what the loop guarantees
// anyway: both run, the loop goes on, another id's completion is untouched,
// and the shared id's done ends as ticket + 1 of one of the two, with that
// request's result.
func TestDuplicateCompletionID(t *testing.T) {
	h := newHarness(t, QueueConfig{Capacity: 64, Completions: 64}, Config{}, 1<<20)
	path, _ := patternFile(t, tmpfsDir(t), 1<<20, 3)
	fh := h.register(path, os.O_RDONLY)
	ids, err := h.p.ReserveCompletions(2)
	if err != nil {
		t.Fatal(err)
	}
	shared, other := ids[0], ids[1]
	lastWon := 0
	for round := 0; round < 200; round++ {
		read := &requestSlot{op: OpRead, file: uint32(fh), dest: uint32(h.dest), length: 1 << 20}
		t0 := h.p.publishWithID(read, shared)
		t1 := h.p.publishWithID(&requestSlot{op: OpNop}, shared)
		t2 := h.p.publishWithID(&requestSlot{op: OpNop}, other)
		c, o := &h.q.comps[shared], &h.q.comps[other]
		eventually(t, fmt.Sprintf("round %d: the other id's NOP (ticket %d) to complete", round, t2),
			func() bool { return atomic.LoadUint64(&o.done) == t2+1 }, loopMeters(h.l)...)
		// The loop claims in order and completes each request once: once
		// t2 is done, both of the shared id's requests were claimed; wait
		// until the loop has nothing in flight.
		eventually(t, fmt.Sprintf("round %d: %d completions", round, 3*(round+1)),
			func() bool { return h.l.Stats().Completed >= uint64(3*(round+1)) }, loopMeters(h.l)...)
		switch done, res := atomic.LoadUint64(&c.done), c.result; {
		case done == t1+1 && res == 0:
		case done == t0+1 && res == 1<<20:
			lastWon++
		default:
			t.Fatalf("round %d: the shared id holds done %d result %d; want ticket %d's (0) or %d's (%d)", round,
				done, res, t1, t0, 1<<20)
		}
		if o.result != 0 {
			t.Fatalf("round %d: the other id's NOP got %d", round, o.result)
		}
	}
	if err := h.l.Err(); err != nil {
		t.Fatalf("the loop failed: %v", err)
	}
	t.Logf("200 rounds: the earlier ticket's READ completed last (done went back to it) in %d", lastWon)
}
