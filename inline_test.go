package megaio

import (
	"bytes"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// memfdFile is a shmem file (what tmpfs files are) holding data, from
// memfd_create, so the test needs no tmpfs mount.
func memfdFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("megaio-inline-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestInlineReads: short READs from a memory-backed file are copied by the
// loop itself (Stats.InlineReads counts them), longer ones and every WRITE
// go to the backend, and all of them return the file's bytes: across EOF,
// past EOF and into a destination offset.
func TestInlineReads(t *testing.T) {
	var st unix.Statfs_t
	for _, be := range []BackendKind{BackendIOUring, BackendPool} {
		for _, inlineMax := range []int{0, 16 << 10, -1} { // the default (64 KiB), a smaller bound, never
			t.Run(be.String()+"/InlineMax="+strconv.Itoa(inlineMax), func(t *testing.T) {
				if be == BackendIOUring {
					requireIOUring(t)
				}
				const size = 300<<10 + 100 // a tail after the last full 4 KiB
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(i*7 + i>>12)
				}
				f := memfdFile(t, data)
				if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
					t.Fatalf("memfd: file system 0x%x, %v; want tmpfs", st.Type, err)
				}
				h := newHarness(t, QueueConfig{}, Config{Backend: be, InlineMax: inlineMax}, 1<<20)
				fh, err := h.l.RegisterFile(f)
				if err != nil {
					t.Fatal(err)
				}
				bound := uint64(h.l.cfg.InlineMax)
				if inlineMax == -1 || swapOn() {
					bound = 0 // nothing is inline (with swap on, tmpfs files are not)
				}
				t.Logf("inline bound %d bytes (swap on: %v)", bound, swapOn())
				cases := []struct {
					off, length, destOff uint64
					want                 int64
				}{
					{0, 4096, 0, 4096},
					{12345, 4096, 100, 4096},
					{40960, 16 << 10, 8192, 16 << 10},
					{0, 16<<10 + 1, 0, 16<<10 + 1},
					{65536, 64 << 10, 0, 64 << 10},
					{1, 64<<10 + 4096, 0, 64<<10 + 4096},
					{size - 100, 4096, 0, 100},                // across EOF: the bytes before it
					{size + 4096, 4096, 0, 0},                 // past EOF: 0
					{size - 300<<10, 300 << 10, 4, 300 << 10}, // long: the backend
				}
				var wantInline uint64
				buf := h.buf.Bytes()
				for _, c := range cases {
					clear(buf)
					res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: c.off, DestOffset: c.destOff,
						Length: c.length})
					if int64(res) != c.want {
						t.Errorf("READ %d bytes at %d: result %d, want %d", c.length, c.off, int64(res), c.want)
						continue
					}
					if c.want > 0 && !bytes.Equal(buf[c.destOff:c.destOff+uint64(c.want)], data[c.off:c.off+uint64(c.want)]) {
						t.Errorf("READ %d bytes at %d: wrong bytes", c.length, c.off)
					}
					if c.length <= bound {
						wantInline++
					}
				}
				// A WRITE is never inline; the READ after it sees its bytes.
				copy(buf, "written through the backend")
				if res := h.do(Request{Op: OpWrite, File: fh, Dest: h.dest, FileOffset: 10, Length: 27}); int64(res) != 27 {
					t.Errorf("WRITE: %d", int64(res))
				}
				clear(buf)
				if res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, FileOffset: 10, Length: 27}); int64(res) != 27 ||
					string(buf[:27]) != "written through the backend" {
					t.Errorf("READ after WRITE: %d %q", int64(res), buf[:27])
				}
				if bound > 0 {
					wantInline++
				}
				// A file that is gone: -EBADF, as from the backend.
				if err := h.l.UnregisterFile(fh); err != nil {
					t.Fatal(err)
				}
				if res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 4096}); int64(res) != -int64(unix.EBADF) {
					t.Errorf("READ of an unregistered file: %d, want -EBADF", int64(res))
				}
				total := uint64(len(cases) + 3)
				eventually(t, "the counters published", func() bool { return h.l.Stats().Completed == total })
				if got := h.l.Stats().InlineReads; got != wantInline {
					t.Errorf("InlineReads = %d, want %d", got, wantInline)
				}
			})
		}
	}
}

// TestInlineOnlyInMemory: a file on a disk file system is never inline.
func TestInlineOnlyInMemory(t *testing.T) {
	path, data := patternFile(t, diskDir(t), 64<<10, 5)
	h := newHarness(t, QueueConfig{}, Config{}, 1<<20)
	fh := h.register(path, os.O_RDONLY)
	if res := h.do(Request{Op: OpRead, File: fh, Dest: h.dest, Length: 4096}); int64(res) != 4096 ||
		!bytes.Equal(h.buf.Bytes()[:4096], data[:4096]) {
		t.Fatalf("READ: %d", int64(res))
	}
	eventually(t, "the counters published", func() bool { return h.l.Stats().Completed == 1 })
	if got := h.l.Stats().InlineReads; got != 0 {
		t.Errorf("InlineReads = %d for a file on a disk file system, want 0", got)
	}
	for fsType, want := range map[int64]bool{unix.EXT4_SUPER_MAGIC: false, unix.RAMFS_MAGIC: true,
		unix.HUGETLBFS_MAGIC: true, unix.TMPFS_MAGIC: !swapOn(), unix.FUSE_SUPER_MAGIC: false} {
		if got := memoryBacked(fsType); got != want {
			t.Errorf("memoryBacked(0x%x) = %v, want %v", fsType, got, want)
		}
	}
}
