package megaio

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The device paths' planning and policy, tested without CUDA: how requests
// are cut into pieces, which path each piece takes, the staging pool's
// accounting and the configuration checks. devengine_test.go runs the paths
// themselves, on a GPU or on the stand-in driver.

// checkPlan cuts [off, end) with nextPiece and checks the pieces tile it
// exactly and each piece keeps its path's rules.
func checkPlan(t testing.TB, off, end uint64, p planParams) (nGDS, nBounce int) {
	t.Helper()
	body, bodyEnd := alignUp(off, p.align), alignDown(end, p.align)
	hasBody := p.gds && body < bodyEnd
	for cur := off; cur < end; {
		sp := nextPiece(off, end, cur, p)
		switch {
		case sp.start != cur || sp.n == 0 || sp.start+sp.n > end:
			t.Fatalf("[%d,%d) %+v: piece at %d is %+v: does not continue the tiling", off, end, p, cur, sp)
		case sp.gds:
			nGDS++
			if !hasBody || sp.start < body || sp.start+sp.n > bodyEnd || sp.start%p.align != 0 || sp.n%p.align != 0 ||
				sp.n > p.gdsMax || sp.ioOff != sp.start || sp.ioLen != sp.n {
				t.Fatalf("[%d,%d) %+v: GDS piece %+v breaks the rules (body [%d,%d))", off, end, p, sp, body, bodyEnd)
			}
		default:
			nBounce++
			if hasBody && sp.start < body && sp.start+sp.n > body {
				t.Fatalf("[%d,%d) %+v: bounce piece %+v crosses into the GDS body at %d", off, end, p, sp, body)
			}
			if hasBody && sp.start >= body && sp.start < bodyEnd {
				t.Fatalf("[%d,%d) %+v: bounce piece %+v inside the GDS body", off, end, p, sp)
			}
			if sp.ioOff%p.align != 0 || sp.ioLen%p.align != 0 || sp.ioOff > sp.start ||
				sp.ioOff+sp.ioLen < sp.start+sp.n || sp.ioLen > p.chunk {
				t.Fatalf("[%d,%d) %+v: bounce piece %+v: its IO is misaligned, misses bytes or overflows a chunk",
					off, end, p, sp)
			}
		}
		cur = sp.start + sp.n
	}
	return nGDS, nBounce
}

func TestNextPiece(t *testing.T) {
	const k = 4096
	direct := planParams{align: k, chunk: 64 << 10, gdsMax: 256 << 10}
	gds := direct
	gds.gds = true
	buffered := planParams{align: 1, chunk: 64 << 10, gdsMax: 256 << 10}
	for _, c := range []struct {
		name          string
		off, n        uint64
		p             planParams
		gdsN, bounceN int
	}{
		{"1 byte, buffered", 0, 1, buffered, 0, 1},
		{"3 chunks + 17, buffered, unaligned", 4095, 3*64<<10 + 17, buffered, 0, 4},
		{"aligned, bounce, direct", 0, 128 << 10, direct, 0, 2},
		{"unaligned, bounce, direct: widened IOs", 100, 64 << 10, direct, 0, 2},
		{"aligned body, GDS", 0, 1 << 20, gds, 4, 0},
		{"unaligned head and tail around a GDS body", 100, 3*k + 50, gds, 1, 2},
		{"too small for a GDS body", 100, 200, gds, 0, 1},
		{"crosses one block boundary, no whole block", k - 10, 20, gds, 0, 1},
		{"head only, body after", 1, 2*k - 1, gds, 1, 1},
		{"tail only", 0, k + 1, gds, 1, 1},
		{"near 2^63", 1<<63 - 2*k - 5, k + 3, gds, 0, 1},
		{"near 2^63 with a body", 1<<63 - 3*k - 5, 2*k + 10, gds, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, b := checkPlan(t, c.off, c.off+c.n, c.p)
			if g != c.gdsN || b != c.bounceN {
				t.Errorf("%d GDS and %d bounce pieces, want %d and %d", g, b, c.gdsN, c.bounceN)
			}
		})
	}
}

// FuzzNextPiece checks the tiling rules for any request and plan.
func FuzzNextPiece(f *testing.F) {
	f.Add(uint64(100), uint64(5000), uint8(1), uint8(1), uint8(3), true)
	f.Add(uint64(0), uint64(1<<20), uint8(2), uint8(4), uint8(1), false)
	f.Add(uint64(4095), uint64(2), uint8(1), uint8(1), uint8(1), true)
	f.Fuzz(func(t *testing.T, off, n uint64, chunkBlocks, maxBlocks, alignSel uint8, gds bool) {
		n = n%(8<<20) + 1
		off %= 1 << 40
		align := []uint64{1, 512, 4096}[alignSel%3]
		p := planParams{align: align, gds: gds && align > 1, chunk: uint64(chunkBlocks%16+1) * 4096,
			gdsMax: uint64(maxBlocks%64+1) * 4096}
		checkPlan(t, off, off+n, p)
	})
}

func TestRequestPlan(t *testing.T) {
	cfg, err := DeviceConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode                           DevicePath
		bufGDS, fileGDS, direct, write bool
		off, n                         uint64
		wantGDS                        bool
		wantErr                        unix.Errno
	}{
		{DevicePathAuto, true, true, true, false, 0, 8192, true, 0},
		{DevicePathAuto, true, false, true, false, 0, 8192, false, 0}, // cuFile refused the file
		{DevicePathAuto, false, true, true, false, 0, 8192, false, 0}, // cuFile refused the buffer
		{DevicePathAuto, true, true, false, false, 0, 8192, false, 0}, // not O_DIRECT
		{DevicePathBounce, true, true, true, false, 0, 8192, false, 0},
		{DevicePathGDS, true, true, true, false, 10, 8192, true, 0}, // unaligned: edges bounce, still GDS
		{DevicePathGDS, true, false, true, false, 0, 8192, false, unix.EOPNOTSUPP},
		{DevicePathGDS, true, true, false, false, 0, 8192, false, unix.EOPNOTSUPP},
		{DevicePathAuto, true, true, true, true, 4096, 8192, true, 0},
		{DevicePathAuto, true, true, true, true, 100, 8192, false, unix.EINVAL}, // unaligned O_DIRECT write
		{DevicePathBounce, false, false, true, true, 0, 100, false, unix.EINVAL},
		{DevicePathBounce, false, false, false, true, 100, 100, false, 0}, // buffered writes may be unaligned
	} {
		name := fmt.Sprintf("%v buf=%v file=%v direct=%v write=%v [%d,+%d)", c.mode, c.bufGDS, c.fileGDS, c.direct,
			c.write, c.off, c.n)
		p, errno := requestPlan(planRequest{mode: c.mode, bufGDS: c.bufGDS, fileGDS: c.fileGDS, direct: c.direct,
			write: c.write, off: c.off, length: c.n}, cfg)
		if errno != -int64(c.wantErr) {
			t.Errorf("%s: errno %d, want %d", name, errno, -int64(c.wantErr))
			continue
		}
		if errno == 0 && p.gds != c.wantGDS {
			t.Errorf("%s: gds %v, want %v", name, p.gds, c.wantGDS)
		}
		if errno == 0 && c.direct != (p.align == gdsAlign) {
			t.Errorf("%s: align %d", name, p.align)
		}
	}

	// GDSThreshold: shorter requests bounce under auto; DevicePathGDS
	// ignores it.
	cfg.GDSThreshold = 64 << 10
	for _, c := range []struct {
		mode    DevicePath
		n       uint64
		wantGDS bool
	}{{DevicePathAuto, 8192, false}, {DevicePathAuto, 64 << 10, true}, {DevicePathGDS, 8192, true}} {
		if p, errno := requestPlan(planRequest{mode: c.mode, bufGDS: true, fileGDS: true, direct: true, length: c.n}, cfg); errno != 0 || p.gds != c.wantGDS {
			t.Errorf("threshold 64 KiB, %v, %d bytes: gds %v (errno %d), want %v", c.mode, c.n, p.gds, errno, c.wantGDS)
		}
	}
}

func TestChooseBufferPath(t *testing.T) {
	refused := fmt.Errorf("%w: no nvidia-fs", ErrGDSUnavailable)
	for _, c := range []struct {
		mode     DevicePath
		gdsErr   error
		want     DevicePath
		warn, ok bool
	}{
		{DevicePathAuto, nil, DevicePathGDS, false, true},
		{DevicePathAuto, refused, DevicePathBounce, true, true},
		{DevicePathGDS, nil, DevicePathGDS, false, true},
		{DevicePathGDS, refused, 0, false, false},
		{DevicePathBounce, nil, DevicePathBounce, false, true},
		{DevicePathBounce, refused, DevicePathBounce, false, true},
	} {
		got, warn, err := chooseBufferPath(c.mode, c.gdsErr)
		if (err == nil) != c.ok || (warn != nil) != c.warn || (c.ok && got != c.want) {
			t.Errorf("%v, %v: path %v, warning %v, error %v", c.mode, c.gdsErr, got, warn, err)
		}
		if warn != nil && !errors.Is(warn, ErrGDSUnavailable) {
			t.Errorf("%v: the warning %v does not match ErrGDSUnavailable", c.mode, warn)
		}
		if err != nil && !errors.Is(err, ErrGDSUnavailable) {
			t.Errorf("%v: the error %v does not match ErrGDSUnavailable", c.mode, err)
		}
	}
}

func TestChunkPool(t *testing.T) {
	p := newChunkPool(3)
	seen := map[uint32]bool{}
	for i := 0; i < 3; i++ {
		c, ok := p.get()
		if !ok || seen[c] || c >= 3 {
			t.Fatalf("get %d: chunk %d, %v (seen %v)", i, c, ok, seen)
		}
		seen[c] = true
	}
	if _, ok := p.get(); ok || p.inUse() != 3 {
		t.Fatalf("an empty pool handed out a chunk (in use %d)", p.inUse())
	}
	p.put(1)
	if c, ok := p.get(); !ok || c != 1 {
		t.Fatalf("after put(1): get = %d, %v", c, ok)
	}
	p.put(0)
	p.put(2)
	if p.inUse() != 1 {
		t.Fatalf("in use %d, want 1", p.inUse())
	}
}

func TestDeviceConfig(t *testing.T) {
	c, err := DeviceConfig{}.withDefaults()
	if err != nil || c.StagingChunks != 16 || c.ChunkSize != 1<<20 || c.MaxPiecesPerRequest != 8 ||
		c.GDSBatchEntries != 32 || c.GDSBatches != 4 || c.GDSMaxIO != 16<<20 || c.GDSRetryLimit != 1000 {
		t.Fatalf("defaults %+v, %v", c, err)
	}
	for _, bad := range []DeviceConfig{
		{Path: 7}, {ChunkSize: 1000}, {ChunkSize: 128 << 20}, {StagingChunks: -1},
		{StagingChunks: 2048, ChunkSize: 1 << 20}, {GDSBatchEntries: 129}, {GDSBatches: 65}, {GDSMaxIO: 5000},
		{MaxPiecesPerRequest: -2}, {GDSRetryLimit: -1},
	} {
		if _, err := bad.withDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", bad, err)
		}
	}
	for _, s := range []string{"auto", "gds", "bounce"} {
		if p, err := ParseDevicePath(s); err != nil || p.String() != s {
			t.Errorf("ParseDevicePath(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseDevicePath("dma"); !errors.Is(err, ErrConfig) {
		t.Errorf("ParseDevicePath(dma) = %v", err)
	}
}

// TestCuFileError: the cuFile codes that mean "GDS cannot serve here"
// match ErrGDSUnavailable; the "retry later" ones are retried.
func TestCuFileError(t *testing.T) {
	for code, unavailable := range map[int]bool{5001: true, 5008: true, 5020: true, 5022: false, 5037: false} {
		err := &CuFileError{Op: "cuFileHandleRegister", Code: code}
		if errors.Is(err, ErrGDSUnavailable) != unavailable {
			t.Errorf("code %d: errors.Is(ErrGDSUnavailable) = %v", code, !unavailable)
		}
	}
	for code, retry := range map[int]bool{5037: true, 5039: true, 5040: true, 5043: true, 5022: false, 5035: false,
		5044: false, 4999: false} {
		if (&CuFileError{Code: code}).retryable() != retry {
			t.Errorf("code %d: retryable = %v", code, !retry)
		}
	}
	if msg := (&CuFileError{Op: "cuFileBatchIOSubmit", Code: 5040}).Error(); !strings.Contains(msg, "CU_FILE_INTERNAL_BATCH_SUBMIT_ERROR") {
		t.Errorf("5040 reads %q", msg)
	}
}
