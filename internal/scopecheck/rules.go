package main

// The expectations for csrc/gpu/protocol_check.cu, one kernel per step of
// the device protocol. Each names, for PTX, how many memory instructions of
// each class the kernel may hold ([min, max]; a class not named must not
// appear at all), and for SASS the same for the machine instructions that
// carry the ordering. Why each is what it is: include/megaio.h (P1..P5) and
// include/megaio_device.cuh.

// many is an open upper bound.
const many = 1 << 30

type bound struct{ min, max int }

type kernelRule struct {
	why  string
	ptx  map[string]bound
	sass map[string]bound
}

// ptx classes are "op.semantics.scope" (see classifyPTX); weak stores to
// the kernels' own outputs are allowed everywhere.
var protocolRules = map[string]kernelRule{
	"check_take_ticket": {
		why: "P1: the ticket counter and the cached claim head are the protocol's only read-modify-writes " +
			"(compare-and-swap, device scope, in device memory); claim_head (and state, when full) are read " +
			"with system-scope acquire loads only when the cache says the ring is full",
		ptx: map[string]bound{"atom.gpu": {2, 2}, "ld.relaxed.gpu": {0, many}, "ld.acquire.gpu": {0, many},
			"ld.acquire.sys": {1, 2}, "st.weak": {0, 1}},
		sass: map[string]bound{"atom.gpu": {2, 2}, "ld.acquire.sys": {1, 2}},
	},
	"check_publish": {
		why:  "P3 fills the slot with plain stores; P4 publishes seq with one system-scope release store; nothing is read",
		ptx:  map[string]bound{"st.weak": {0, many}, "st.release.sys": {1, 1}},
		sass: map[string]bound{"st.release.sys": {1, 1}},
	},
	"check_poll": {
		why:  "P5 reads done with a system-scope acquire load, then the result",
		ptx:  map[string]bound{"ld.acquire.sys": {1, 1}, "ld.volatile": {0, 1}, "st.weak": {0, 1}},
		sass: map[string]bound{"ld.acquire.sys": {1, 1}},
	},
	"check_stopped_before": {
		why:  "the stop check reads state, then claim_head, both with system-scope acquire loads",
		ptx:  map[string]bound{"ld.acquire.sys": {2, 2}, "st.weak": {0, 1}},
		sass: map[string]bound{"ld.acquire.sys": {2, 2}},
	},
	"check_wait": {
		why: "megaio_dev_wait: done, state, claim_head and done again, all system-scope acquire loads; " +
			"the result after done; nothing written (ABI v2 has no turn to hand on)",
		ptx:  map[string]bound{"ld.acquire.sys": {4, 8}, "ld.volatile": {1, 4}, "st.weak": {0, 1}},
		sass: map[string]bound{"ld.acquire.sys": {4, many}},
	},
}
