package benchrun

import (
	"encoding/binary"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ContiguousRuns counts the physically contiguous runs of mem's pages, from
// /proc/self/pagemap: what a READ into mem costs in DMA descriptors. It
// needs CAP_SYS_ADMIN to see page frame numbers; ok is false without it
// (or for memory not present).
func ContiguousRuns(mem []byte) (runs int, ok bool) {
	if len(mem) == 0 {
		return 0, false
	}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	page := uintptr(unix.Getpagesize())
	start := uintptr(unsafe.Pointer(&mem[0])) / page
	n := (uintptr(len(mem)) + page - 1) / page
	entries := make([]byte, 8*n)
	if _, err := f.ReadAt(entries, int64(start*8)); err != nil {
		return 0, false
	}
	var prev uint64
	for i := range n {
		e := binary.LittleEndian.Uint64(entries[8*i:])
		pfn := e & (1<<55 - 1)
		if e&(1<<63) == 0 || pfn == 0 { // not present, or PFNs hidden from us
			return 0, false
		}
		if i == 0 || pfn != prev+1 {
			runs++
		}
		prev = pfn
	}
	return runs, true
}
