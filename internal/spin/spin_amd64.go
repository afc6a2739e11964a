// Package spin holds the CPU's spin-wait hint, which Go does not export.
// (It is a package of its own because a package using cgo cannot hold Go
// assembly.)
package spin

// Pause executes n PAUSE instructions (spin_amd64.s): a spin-wait that
// tells the core it is polling, and leaves the polled cache line alone for
// the while. A PAUSE takes from about 10 to 140 cycles depending on the CPU.
//
//go:noescape
func Pause(n int)
