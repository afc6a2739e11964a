package megaio

import "golang.org/x/sys/unix"

// mapBuffer maps size bytes of zeroed, populated memory for IO: with
// hugetlb, 2 MiB pages from the reserved pool (MAP_HUGETLB; size rounded
// up to them); otherwise it asks for transparent huge pages before the
// memory is populated (MADV_HUGEPAGE, which the kernel honours in its
// default "madvise" mode). Fewer, larger physically contiguous runs mean a
// large READ takes fewer DMA descriptors: on a virtio disk without indirect
// descriptors a 1 MiB READ into 4 KiB pages is split and re-issued
// (docs/BENCHMARKS.md).
func mapBuffer(size int, hugetlb bool) ([]byte, error) {
	if hugetlb || size < 1<<21 {
		return mapAnonymous(size, hugetlb)
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	unix.Madvise(mem, unix.MADV_HUGEPAGE)                   // EINVAL where THP is off: small pages, as before
	if unix.Madvise(mem, unix.MADV_POPULATE_WRITE) != nil { // Linux 5.14+
		for i := 0; i < len(mem); i += pageSize {
			mem[i] = 0 // fault every page in now, not during the first READ
		}
	}
	return mem, nil
}

// pageSize is the base page size (mapBuffer populates page by page where
// MADV_POPULATE_WRITE is missing).
var pageSize = unix.Getpagesize()

// mapAnonymous maps size bytes of zeroed, page-aligned, populated memory.
// With hugepages it asks for 2 MiB pages (size rounded up to them).
func mapAnonymous(size int, hugepages bool) ([]byte, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_POPULATE
	if hugepages {
		flags |= unix.MAP_HUGETLB
		size = (size + 1<<21 - 1) &^ (1<<21 - 1)
	}
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, flags)
}
