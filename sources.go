package megaio

import "embed"

// cSources holds the C sources and headers the package compiles from csrc/
// and include/. Embedding them makes their contents inputs of the package's
// build: the go command's cache tracks only files it knows of, and a C file
// included from another directory would otherwise be left stale in the
// cache after an edit. Headers returns the two headers producers include.
//
//go:embed csrc/*.c csrc/*.h include/megaio.h include/megaio_device.cuh include/megaio_cpu.h
var cSources embed.FS

// Header returns the contents of a producer header ("megaio.h",
// "megaio_device.cuh", or "megaio_cpu.h", which megaio_device.cuh includes
// when a host compiler builds it for CPU threads) as this build of the
// package speaks it, for tools that compile kernels against the exact ABI
// of the running library (kernels.Open writes all three).
func Header(name string) ([]byte, error) { return cSources.ReadFile("include/" + name) }
