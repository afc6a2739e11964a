package megaio

// The CPU launcher: kernels written against include/megaio_device.cuh,
// compiled by a host C++ compiler into a shared library (include/megaio_cpu.h
// says how, and what the model is), run on CPU threads against a real loop.
// It lets a megakernel's IO logic run in ordinary tests, under
// ThreadSanitizer too, on machines without a GPU. The loader is
// cpukernel_cgo.go.

// ActiveMask is what __activemask() returns on the CPU launcher.
type ActiveMask int

const (
	// ActiveMaskLive: every lane of the warp that has not returned.
	ActiveMaskLive ActiveMask = 0
	// ActiveMaskCaller: only the calling lane, the least independent
	// thread scheduling (sm_70 and newer) allows even on one code path.
	// Code that elects a leader from __activemask() breaks under it.
	ActiveMaskCaller ActiveMask = 1
)

func (m ActiveMask) String() string {
	if m == ActiveMaskCaller {
		return "caller"
	}
	return "live"
}

// CPULaunchOptions tune one launch.
type CPULaunchOptions struct {
	ActiveMask ActiveMask // what __activemask() returns
}
