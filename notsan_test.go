//go:build !megaio_tsan

package megaio

// cpuTSan: the CPU twins' kernels are built without ThreadSanitizer.
const cpuTSan = false
