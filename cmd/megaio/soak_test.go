package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/megaio/megaio"
)

// TestSoak runs a short soak on each backend: nothing lost, every READ
// verified, every result as expected, across Stop/Start cycles and tickets
// wrapping past 2^64.
func TestSoak(t *testing.T) {
	refused := ioURingRefused(t)
	for _, be := range []megaio.BackendKind{megaio.BackendIOUring, megaio.BackendPool} {
		if be == megaio.BackendIOUring && refused != "" {
			t.Logf("not soaking io_uring: it is refused here: %s", refused)
			continue
		}
		var out bytes.Buffer
		rep, err := soak(soakConfig{duration: 3 * time.Second, cycle: 200 * time.Millisecond, producers: 6, backend: be,
			dir: defaultDir(), seed: 7}, &out)
		t.Logf("%v:\n%s", be, out.String())
		if err != nil {
			t.Fatalf("%v: %v", be, err)
		}
		if err := rep.verdict(); err != nil {
			t.Errorf("%v: %v", be, err)
		}
		if rep.Cycles < 3 || rep.Reads == 0 || rep.Writes == 0 || rep.Invalid == 0 || rep.BytesVerified == 0 || rep.Completed < 1000 {
			t.Errorf("%v: the soak did too little: %+v", be, rep)
		}
	}
}
