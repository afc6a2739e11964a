//go:build megaio_tsan && race

package megaio

// The megaio_tsan tag links ThreadSanitizer's C runtime, and -race links
// Go's copy of it: the two cannot share a program. Build with one or the
// other.
const megaioTSanCannotBeCombinedWithRace int = "build with -tags megaio_tsan or with -race, not both"
