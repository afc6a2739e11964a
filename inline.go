package megaio

import (
	"bytes"
	"os"

	"golang.org/x/sys/unix"
)

// Inline reads: short READs from memory-backed files, copied by the loop.
//
// io_uring first tries a READ without blocking and completes it at once
// when that works, but only for a file whose file system says it can tell
// "would block" apart (FMODE_NOWAIT). tmpfs does not (kernel 6.18:
// preadv2 with RWF_NOWAIT on a tmpfs file answers EOPNOTSUPP), so io_uring
// hands every tmpfs READ to an io-wq worker thread: a wake-up of that
// worker and a task-work hop back, several microseconds of CPU for a 4 KiB
// copy that takes well under one (docs/BENCHMARKS.md, "Where the time
// goes"). Yet such a read never waits for a device: its pages are in
// memory, unless they were swapped out.
//
// So a file on tmpfs (while no swap is on), ramfs or hugetlbfs is marked
// inline when it is registered, and a READ from it of at most
// Config.InlineMax bytes into host memory is done by the loop's thread with
// one pread, in the cycle that claimed it. What the loop gives up: while it
// copies it does nothing else, so the default bound (64 KiB, a few
// microseconds) keeps every other request's wait short; a cycle claims at
// most claimBatch requests, so at most that many copies run between two
// reaps of the backend. WRITEs are never inline: a write to tmpfs allocates
// pages (which can enter reclaim and wait for the disk) and takes the
// inode's lock. Device destinations go to the device engine as before.
//
// Swap is checked once, at RegisterFile: with swap on, a tmpfs page may be
// on the swap device and reading it would stall the loop, so tmpfs files
// are then served by the backend. Swap turned on later makes such a read
// slow, never wrong.

// defaultInlineMax is Config.InlineMax's default; maxInlineMax its bound.
const (
	defaultInlineMax = 64 << 10
	maxInlineMax     = 16 << 20
)

// inlineOK reports whether e's READs may be copied by the loop.
func (e *fileEntry) inlineOK() bool { return e.valid && e.inline }

// memoryBacked reports whether files of the file system with magic fsType
// keep their data in memory only, so a read waits on no device.
func memoryBacked(fsType int64) bool {
	switch fsType {
	case unix.RAMFS_MAGIC, unix.HUGETLBFS_MAGIC:
		return true
	case unix.TMPFS_MAGIC:
		return !swapOn()
	}
	return false
}

// TmpfsInline reports whether a tmpfs file registered now would have its
// short READs copied by the loop (Config.InlineMax): only while no swap is
// on. Files on ramfs and hugetlbfs always are.
func TmpfsInline() bool { return !swapOn() }

// swapOn reports whether any swap area is active (or /proc/swaps cannot
// be read, when it has to assume so).
func swapOn() bool {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return true
	}
	// A header line, then one line per active area.
	return bytes.Count(bytes.TrimSpace(b), []byte("\n")) > 0
}

// readInline runs record i's READ with pread on the loop's thread and
// hands the result to reaped, as a completion from a backend would be: a
// short read goes back on the pending list to continue (the next pread at
// EOF returns 0 and ends it).
func (cy *cycle) readInline(i uint32, r *record) {
	if r.done == 0 {
		cy.st.inlineReads++ // a request, not each continuation
	}
	n, _, errno := unix.Syscall6(unix.SYS_PREAD64, uintptr(cy.tab.files[r.file].fd), uintptr(r.addr),
		uintptr(r.remaining), uintptr(r.fileOff), 0, 0)
	res := int64(n)
	if errno != 0 {
		res = -int64(errno)
	}
	cy.reaped(i, res, cy.l.now())
}
