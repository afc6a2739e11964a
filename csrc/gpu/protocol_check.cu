/*
 * protocol_check.cu - each step of the device protocol (megaio_device.cuh)
 * in a kernel of its own, so that the instructions nvcc generates for one
 * step can be told from another's. Never launched: build.sh compiles it for
 * every target architecture and internal/scopecheck reads its PTX and SASS
 * (cuobjdump) to check megaio.h's ordering argument mechanically:
 *
 *   - seq is published with a system-scope release store (P4), and
 *     publishing reads nothing across PCIe;
 *   - claim_head, state and done are read with system-scope acquire loads
 *     (P1's slow path, P5 and the stop check), done twice in megaio_dev_wait;
 *   - the ticket counter and the cached claim head are the only
 *     read-modify-writes, device scope (P1);
 *   - no step does a system-scope read-modify-write, which PCIe does not
 *     make atomic for the host.
 *
 * The expectations for each kernel are in internal/scopecheck/rules.go.
 * The queue view is passed by value, so no kernel loads it from memory.
 */
#include "megaio_device.cuh"

extern "C" __global__ void check_take_ticket(megaio_dev_queue q, unsigned long long *out)
{
	unsigned long long t = 0;
	int r = megaio_dev_take_ticket(q, &t);
	*out = r < 0 ? (unsigned long long)r : t;
}

extern "C" __global__ void check_publish(megaio_dev_queue q, unsigned long long t, megaio_request req, uint32_t cid)
{
	megaio_dev_publish(q, t, req, cid);
}

extern "C" __global__ void check_poll(megaio_dev_queue q, uint32_t cid, unsigned long long t, long long *out)
{
	long long r;
	if (megaio_dev_poll(q, cid, t, &r))
		*out = r;
}

extern "C" __global__ void check_stopped_before(megaio_dev_queue q, unsigned long long t, int *out)
{
	*out = megaio_dev_stopped_before(q, t);
}

extern "C" __global__ void check_wait(megaio_dev_queue q, uint32_t cid, unsigned long long t, long long *out)
{
	*out = megaio_dev_wait(q, cid, t);
}
