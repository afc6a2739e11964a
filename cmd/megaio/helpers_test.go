package main

import (
	"errors"
	"testing"

	"github.com/megaio/megaio"
)

// ioURingRefused says why io_uring cannot be used here ("" when it can):
// containers' default seccomp profiles refuse it.
func ioURingRefused(t *testing.T) string {
	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	l, err := megaio.NewLoop(q, megaio.Config{Backend: megaio.BackendIOUring})
	if errors.Is(err, megaio.ErrIOUringUnavailable) {
		return err.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return ""
}
