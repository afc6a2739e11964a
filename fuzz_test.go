package megaio

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzCheckRange: request validation accepts exactly the requests that fit,
// and fails the others with the errno of their first fault.
func FuzzCheckRange(f *testing.F) {
	f.Add(uint32(0), uint32(0), uint64(0), uint64(0), uint64(4096))
	f.Add(uint32(1), uint32(0), uint64(0), uint64(0), uint64(1))
	f.Add(uint32(0), uint32(1), uint64(0), uint64(0), uint64(1))
	f.Add(uint32(0), uint32(0), uint64(1<<63-1), uint64(0), uint64(1))
	f.Add(uint32(0), uint32(0), uint64(0), uint64(8191), uint64(2))
	f.Add(uint32(0), uint32(0), uint64(0), ^uint64(0), uint64(2))
	f.Add(uint32(0), uint32(0), uint64(0), uint64(0), uint64(MaxLength+1))
	tab := newTables(2, 1)
	tab.files[0].valid = true
	tab.dests = []destination{{buf: 0, addr: 1 << 20, length: 8192, valid: true}, {length: 8192}}
	f.Fuzz(func(t *testing.T, file, dest uint32, fileOff, destOff, length uint64) {
		d, e := tab.checkRange(nil, file, dest, fileOff, destOff, length)
		var want unix.Errno
		switch {
		case file != 0:
			want = unix.EBADF
		case dest != 0:
			want = unix.ENXIO
		case length == 0:
			want = unix.EINVAL
		case length > MaxLength:
			want = unix.E2BIG
		case fileOff+length < fileOff || fileOff+length > 1<<63-1:
			want = unix.EOVERFLOW
		case destOff+length < destOff || destOff+length > 8192:
			want = unix.EFAULT
		}
		switch {
		case want != 0 && (e != -int64(want) || d != nil):
			t.Fatalf("checkRange(%d, %d, %d, %d, %d) = %v, %d; want -%v", file, dest, fileOff, destOff, length, d, e, want)
		case want == 0 && (e != 0 || d != &tab.dests[0]):
			t.Fatalf("checkRange(%d, %d, %d, %d, %d) = %v, %d; want the destination", file, dest, fileOff, destOff, length, d, e)
		}
	})
}

// live is one loop per fuzzing process, serving a tmpfs file and a 64 KiB
// destination. It is never closed: the process ends with the fuzzing.
var live struct {
	once      sync.Once
	h         *harness
	published uint64
	badIDs    uint64 // requests published with a completion id outside the table
	err       error
}

func liveLoop(t *testing.T) *harness {
	live.once.Do(func() {
		q, err := NewQueue(QueueConfig{Capacity: 64, FirstTicket: ^uint64(0) - 1000})
		if err != nil {
			live.err = err
			return
		}
		l, err := NewLoop(q, Config{RingEntries: 8, MaxInflight: 16})
		if err != nil {
			live.err = err
			return
		}
		h := &harness{t: t, q: q, l: l}
		h.p, _ = q.HostProducer()
		h.buf, _ = l.NewBuffer(64<<10, BufferOptions{})
		h.dest, _ = l.AddDestination(h.buf, 0, 64<<10)
		f, err := os.CreateTemp(tmpfsDirNoCleanup(), "megaio-fuzz-*")
		if err != nil {
			live.err = err
			return
		}
		f.Write(make([]byte, 1<<20))
		l.RegisterFile(f) // handle 0
		os.Remove(f.Name())
		f.Close()
		live.err = l.Start()
		live.h = h
	})
	if live.err != nil {
		t.Fatalf("setting up the live loop: %v", live.err)
	}
	return live.h
}

func tmpfsDirNoCleanup() string {
	if unix.Access("/dev/shm", unix.W_OK) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

// FuzzLiveQueue publishes whole slots of random bytes into a live queue:
// every published ticket completes, with bytes moved or a negative errno,
// the loop never dies, and it completes each ticket exactly once.
func FuzzLiveQueue(f *testing.F) {
	slot := func(op, flags uint16, file, dest uint32, fileOff, destOff, length uint64) []byte {
		b := make([]byte, 48)
		binary.LittleEndian.PutUint16(b[0:], op)
		binary.LittleEndian.PutUint16(b[2:], flags)
		binary.LittleEndian.PutUint32(b[4:], file)
		binary.LittleEndian.PutUint32(b[8:], dest)
		binary.LittleEndian.PutUint64(b[16:], fileOff)
		binary.LittleEndian.PutUint64(b[24:], destOff)
		binary.LittleEndian.PutUint64(b[32:], length)
		return b
	}
	f.Add(slot(uint16(OpRead), 0, 0, 0, 0, 0, 4096))
	f.Add(append(slot(uint16(OpWrite), 0, 0, 0, 1<<30, 100, 5000), slot(uint16(OpFence), 0, 0, 0, 0, 0, 0)...))
	f.Add(append(slot(uint16(OpFsync), 0, 0, 0, 0, 0, 0), slot(9, 0, 0, 0, 0, 0, 1)...))
	f.Add(slot(uint16(OpRead), 0, 0, 0, 1<<63-1, 0, 10))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := liveLoop(t)
		var tickets []Ticket
		var lengths []uint64
		var ops []Op
		for len(data) >= 48 && len(tickets) < 64 {
			b := data[:48]
			data = data[48:]
			r := requestSlot{op: Op(binary.LittleEndian.Uint16(b[0:])), flags: binary.LittleEndian.Uint16(b[2:]),
				file: binary.LittleEndian.Uint32(b[4:]), dest: binary.LittleEndian.Uint32(b[8:]),
				fileOffset: binary.LittleEndian.Uint64(b[16:]),
				destOffset: binary.LittleEndian.Uint64(b[24:]), length: binary.LittleEndian.Uint64(b[32:]),
				tag: binary.LittleEndian.Uint64(b[40:])}
			if id := binary.LittleEndian.Uint32(b[12:]); id&(1<<31) != 0 {
				// A completion id outside the table: dropped and
				// counted, never answered.
				h.p.publishWithID(&r, uint32(len(h.q.comps))+id&0xffff)
				live.badIDs++
				continue
			}
			tickets = append(tickets, h.p.publish(&r))
			lengths, ops = append(lengths, r.length), append(ops, r.op)
		}
		for i, tk := range tickets {
			res, err := h.p.Wait(tk)
			switch {
			case err != nil:
				t.Fatalf("slot %d: %v", i, err)
			case res < -4095:
				t.Fatalf("slot %d: result %d is neither bytes nor an errno", i, res)
			case res >= 0 && (ops[i] == OpRead || ops[i] == OpWrite) && uint64(res) > lengths[i]:
				t.Fatalf("slot %d: %v moved %d bytes of %d", i, ops[i], res, lengths[i])
			case res > 0 && ops[i] != OpRead && ops[i] != OpWrite:
				t.Fatalf("slot %d: %v returned %d", i, ops[i], res)
			}
		}
		if got := h.do(Request{Op: OpNop}); got != 0 {
			t.Fatalf("NOP after the fuzzed slots = %d", got)
		}
		live.published += uint64(len(tickets)) + 1
		eventually(t, fmt.Sprintf("%d requests completed and %d dropped for their completion ids", live.published,
			live.badIDs), func() bool {
			st := h.l.Stats()
			return st.Completed == live.published && st.BadIDs == live.badIDs
		}, append(loopMeters(h.l), meter{"dropped for their ids", func() uint64 { return h.l.Stats().BadIDs }})...)
	})
}
