//go:build !cgo

package cpukernel

// Built without cgo there is no launcher (it loads libraries with dlopen):
// Load returns ErrCgoRequired, and nothing else can be reached.

import (
	"context"
	"time"
)

// Module needs cgo; Load says so.
type Module struct{}

// Run is never made without cgo.
type Run struct{}

func Load(path string) (*Module, error) { return nil, ErrCgoRequired }
func (m *Module) Launch(kernel string, grid, block Dim3, opts LaunchOptions, args ...uint64) (*Run, error) {
	return nil, ErrCgoRequired
}
func (l *Run) Wait(ctx context.Context, grace time.Duration) error { return ErrCgoRequired }
func (l *Run) Ended() bool                                         { return true }
func (l *Run) Returned() int                                       { return 0 }

// Available reports why there is no launcher here: built without cgo.
func Available() error { return ErrCgoRequired }
