// Package examples holds programs that take a kernel source to a running
// persistent kernel served by a megaio loop, each a main package of its own
// with its .cu file beside it, importing only the public package:
//
//   - checksum: a persistent kernel reads a file through the loop, pass
//     after pass, into mapped host memory or (-device) GPU memory, until
//     the host stores its stop word; every block's sum is checked.
//   - checkpoint: a kernel computes results into host memory and spills
//     them to a file with WRITE, then FSYNC; the file is checked.
//   - warpread: a warp per request, large chunks, the lanes summing
//     together; results copied out of the kernels' own memory.
//
// Each runs on a GPU where one opens (nvcc builds its kernel) and on CPU
// threads otherwise, from the same source, and says which:
//
//	go run ./examples/checksum
//
// examples_test.go builds and runs them all, on CPU threads and, where
// there is a GPU, on it.
package examples
