//go:build megaio_tsan

package megaio

// cpuTSan: built with -tags megaio_tsan, the CPU twins' kernels are built
// with -fsanitize=thread and the test binary links ThreadSanitizer's
// runtime (tsan_cgo.go).
const cpuTSan = true
