//go:build !amd64

// Package spin holds the CPU's spin-wait hint, which Go does not export.
package spin

// Pause returns at once where no spin-wait hint is wired up: callers bound
// their waits by the clock, not by a count of pauses.
func Pause(n int) {}
