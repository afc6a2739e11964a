package megaio

import "golang.org/x/sys/unix"

// Planning a device request: the policy that decides how a READ or WRITE
// whose destination is device memory is served, free of CUDA so that it
// can be tested anywhere (device_test.go's TestRequestPlan, TestNextPiece
// and TestChooseBufferPath run on every machine).
// A buffer's path is decided once (chooseBufferPath, when it is
// registered); each request's plan at its claim (devEngine.plan ->
// requestPlan); its pieces as the engine issues them (nextPiece). The
// engine (devengine.go) carries the plan out; devicebuffer.go holds the public types.

// chooseBufferPath decides a buffer's path from the configured mode and
// what cuFile answered (gdsErr: nil when cuFile registered the buffer). It
// is the whole of the buffer-level policy, kept free of CUDA so it can be
// tested anywhere.
func chooseBufferPath(mode DevicePath, gdsErr error) (DevicePath, *PathWarning, error) {
	switch {
	case mode == DevicePathBounce:
		return DevicePathBounce, nil, nil
	case gdsErr == nil:
		return DevicePathGDS, nil, nil
	case mode == DevicePathGDS:
		return 0, nil, errorf("Device.Path is gds: %w", gdsErr)
	}
	return DevicePathBounce, &PathWarning{Cause: gdsErr}, nil
}

// planParams is how one request is cut into pieces.
type planParams struct {
	align  uint64 // file alignment: gdsAlign for O_DIRECT files, 1 otherwise
	gds    bool   // the aligned body goes through GDS
	chunk  uint64 // staging chunk size (a multiple of align)
	gdsMax uint64 // largest GDS IO (a multiple of align)
}

// planRequest is what requestPlan decides from: the request and what
// serves its file and its buffer.
type planRequest struct {
	mode        DevicePath // the loop's Device.Path
	bufGDS      bool       // the buffer is registered with cuFile (its path is GDS)
	fileGDS     bool       // the file has a cuFile handle
	direct      bool       // the file is O_DIRECT
	write       bool       // a WRITE (bytes flow to the file)
	off, length uint64     // the file range
}

// requestPlan decides how a READ or WRITE of [off, off+length) to a device
// destination is served, or returns the negative errno that completes it:
//   - a WRITE to an O_DIRECT file must be 4 KiB aligned in offset and
//     length (-EINVAL otherwise: the unaligned edges would need a
//     read-modify-write of blocks other writers may be changing);
//   - with DevicePathGDS, a file or buffer GDS does not serve is
//     -EOPNOTSUPP.
func requestPlan(r planRequest, cfg DeviceConfig) (planParams, int64) {
	p := planParams{align: 1, chunk: uint64(cfg.ChunkSize), gdsMax: uint64(cfg.GDSMaxIO)}
	if r.direct {
		p.align = gdsAlign
	}
	if r.write && r.direct && (r.off%gdsAlign != 0 || r.length%gdsAlign != 0) {
		return p, -int64(unix.EINVAL)
	}
	p.gds = r.bufGDS && r.fileGDS && r.direct && r.mode != DevicePathBounce &&
		(r.mode == DevicePathGDS || r.length >= uint64(cfg.GDSThreshold))
	if r.mode == DevicePathGDS && !p.gds {
		return p, -int64(unix.EOPNOTSUPP)
	}
	return p, 0
}

// span is one piece of a request: the bytes [start, start+n) it delivers,
// and for the bounce path the file range [ioOff, ioOff+ioLen) it reads,
// widened to the file's alignment (O_DIRECT).
type span struct {
	start, n     uint64
	gds          bool
	ioOff, ioLen uint64
}

func alignDown(x, a uint64) uint64 { return x - x%a }
func alignUp(x, a uint64) uint64   { return alignDown(x+a-1, a) }

// nextPiece returns the piece of request [off, end) that starts at cur
// (off <= cur < end). With GDS, the body [alignUp(off), alignDown(end)) goes
// in GDS IOs of at most gdsMax bytes, and the head before it and the tail
// after it go through the bounce path. A bounce piece fits one staging
// chunk including the widening to the alignment.
func nextPiece(off, end, cur uint64, p planParams) span {
	if p.gds {
		body, bodyEnd := alignUp(off, p.align), alignDown(end, p.align)
		if body < bodyEnd {
			if cur >= body && cur < bodyEnd {
				n := min(bodyEnd-cur, p.gdsMax)
				return span{start: cur, n: n, gds: true, ioOff: cur, ioLen: n}
			}
			if cur < body {
				end = body // the head stops where the body starts
			}
		}
	}
	ioOff := alignDown(cur, p.align)
	e := min(end, ioOff+p.chunk)
	return span{start: cur, n: e - cur, ioOff: ioOff, ioLen: alignUp(e, p.align) - ioOff}
}

// plan checks a READ or WRITE whose destination d is device memory and
// plans its pieces; a nonzero errno is its result instead.
func (e *devEngine) plan(req *requestSlot, d *destination) (planParams, int64) {
	fs := &e.files[req.file]
	if fs.f == nil {
		return planParams{}, -int64(unix.EBADF) // the device paths hold no descriptor for it (see gdsWhy)
	}
	return requestPlan(planRequest{mode: e.cfg.Path, bufGDS: d.dev.path == DevicePathGDS, fileGDS: fs.f.fh != nil,
		direct: fs.f.direct, write: req.op.spec().write, off: req.fileOffset, length: req.length}, e.cfg)
}
