//go:build megaio_tsan && cgo && !race

package megaio

// With -tags megaio_tsan the binary links ThreadSanitizer's runtime, so that
// kernels built with -fsanitize=thread and run by the CPU launcher
// (package cpukernel) are checked. The runtime must be in the program from
// its start, hence the link flag here rather than in the kernels' library.
// It cannot be combined with -race: Go's race detector carries its own
// copy of the same runtime (tsan_race.go refuses the pair).

// #cgo LDFLAGS: -fsanitize=thread
import "C"
