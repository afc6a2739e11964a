package megaio

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestErrorPrefixOnce: an error that wraps the package's errors, however
// deep, says "megaio:" once, at its start, and still matches what it wraps.
func TestErrorPrefixOnce(t *testing.T) {
	inner := &CuFileError{Op: "cuFileDriverOpen", Code: 5007}
	gds := errorf("%w: %w", ErrGDSUnavailable, inner)
	err := errorf("Device.Path is gds: %w", gds)
	msg := err.Error()
	if strings.Count(msg, "megaio:") != 1 || !strings.HasPrefix(msg, "megaio: ") {
		t.Errorf("%q: want one megaio: prefix, at the start", msg)
	}
	var cf *CuFileError
	if !errors.Is(err, ErrGDSUnavailable) || !errors.As(err, &cf) || cf.Code != 5007 {
		t.Errorf("%q no longer matches what it wraps", msg)
	}
	if got := configError("MaxFiles %d", 0).Error(); got != "megaio: bad configuration: MaxFiles 0" {
		t.Errorf("configError: %q", got)
	}
	if got := errorf("%w: %w", ErrRingFailed, unix.EBADFD).Error(); strings.Count(got, "megaio:") != 1 {
		t.Errorf("%q", got)
	}
	if got := errorf("plain %d", 1).Error(); got != "megaio: plain 1" {
		t.Errorf("errorf without a wrapped error: %q", got)
	}
	if !errors.Is(errorf("%w: %w", ErrRingFailed, unix.EBADFD), unix.EBADFD) {
		t.Error("the errno is lost")
	}
}
