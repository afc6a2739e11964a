package megaio

import (
	"context"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// faultFile is a file of a FUSE file system whose reads fail, come up
// short, or block, as a test chooses: faults through the kernel's real read
// path, no mocks.
type faultFile struct {
	fs.Inode
	data    []byte
	eioFrom int64         // reads reaching this offset fail with EIO (-1: never)
	maxRead int           // reads return at most this many bytes (0: no limit)
	gate    chan struct{} // when set, reads block until it is closed (or the read is interrupted)
	deaf    bool          // with gate: interrupts are ignored, as a hung server would
	reads   chan struct{} // when set, gets a token as each read starts
}

var (
	_ fs.NodeOpener    = (*faultFile)(nil)
	_ fs.NodeReader    = (*faultFile)(nil)
	_ fs.NodeGetattrer = (*faultFile)(nil)
)

func (f *faultFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// Direct IO: every read reaches Read with its own offset and length,
	// and short reads reach the reader as they are.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *faultFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o444 | syscall.S_IFREG
	out.Size = uint64(len(f.data))
	return 0
}

func (f *faultFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.reads != nil {
		select {
		case f.reads <- struct{}{}:
		default:
		}
	}
	if f.gate != nil && f.deaf {
		<-f.gate
	} else if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, syscall.EINTR
		}
	}
	n := int64(len(dest))
	if f.maxRead > 0 && n > int64(f.maxRead) {
		n = int64(f.maxRead)
	}
	if f.eioFrom >= 0 && off+n > f.eioFrom {
		return nil, syscall.EIO
	}
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+n, int64(len(f.data)))
	return fuse.ReadResultData(f.data[off:end]), 0
}

// faultFS mounts files at a temporary directory and returns their paths.
// It skips the test, saying why, where FUSE cannot be mounted.
func faultFS(t *testing.T, files map[string]*faultFile) map[string]string {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping: no /dev/fuse (%v)", err)
	}
	root := &fs.Inode{}
	dir := t.TempDir()
	var once sync.Once
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: os.Geteuid() == 0, FsName: "megaio-faults", Name: "megaio"},
		OnAdd: func(ctx context.Context) {
			once.Do(func() {
				for name, f := range files {
					ch := root.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG})
					root.AddChild(name, ch, false)
				}
			})
		},
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		t.Skipf("skipping: cannot mount a FUSE file system here (needs root or fusermount): %v", err)
	}
	t.Cleanup(func() {
		for _, f := range files {
			if f.gate != nil {
				select {
				case <-f.gate:
				default:
					close(f.gate)
				}
			}
		}
		server.Unmount()
	})
	paths := map[string]string{}
	for name := range files {
		paths[name] = dir + "/" + name
	}
	return paths
}
