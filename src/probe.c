#define _GNU_SOURCE
#include "arctic/probe.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "arctic/config.h"
#include "arctic/util.h"

static struct probe P;
static bool probed;

static bool ring_with(unsigned flags)
{
	struct io_uring ring;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags;
	if (flags & IORING_SETUP_SQPOLL)
		p.sq_thread_idle = 10;
	if (io_uring_queue_init_params(8, &ring, &p) < 0)
		return false;
	io_uring_queue_exit(&ring);
	return true;
}

const struct probe *probe_get(void)
{
	if (probed)
		return &P;
	probed = true;
	struct utsname u;
	if (uname(&u) == 0)
		snprintf(P.kernel, sizeof(P.kernel), "%s %s", u.sysname, u.release);
	struct io_uring ring;
	int rc = io_uring_queue_init(8, &ring, 0);
	if (rc < 0) {
		P.io_uring_err = rc;
		return &P;
	}
	P.io_uring = true;
	struct io_uring_probe *pr = io_uring_get_probe_ring(&ring);
	if (pr) {
		P.op_socket = io_uring_opcode_supported(pr, IORING_OP_SOCKET);
		P.op_send_zc = io_uring_opcode_supported(pr, IORING_OP_SEND_ZC);
		io_uring_free_probe(pr);
	}
	/* provided-buffer ring: register a tiny one and drop it */
	size_t sz = 4096;
	void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem != MAP_FAILED) {
		struct io_uring_buf_reg reg;
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (unsigned long)mem;
		reg.ring_entries = 8;
		reg.bgid = 7;
		P.buf_ring_err = io_uring_register_buf_ring(&ring, &reg, 0);
		if (P.buf_ring_err == 0) {
			P.buf_ring = true;
			io_uring_unregister_buf_ring(&ring, 7);
		}
		munmap(mem, sz);
	} else {
		P.buf_ring_err = -errno;
	}
	/* NAPI: registering with a zero timeout is harmless; EINVAL from
	 * an older kernel means the opcode is unknown. */
	struct arc_io_uring_napi napi;
	memset(&napi, 0, sizeof(napi));
	long r = syscall(__NR_io_uring_register, ring.ring_fd,
			 ARC_IORING_REGISTER_NAPI, &napi, 1);
	if (r == 0) {
		P.napi = true;
		syscall(__NR_io_uring_register, ring.ring_fd,
			ARC_IORING_UNREGISTER_NAPI, &napi, 1);
	}
	io_uring_queue_exit(&ring);
	P.defer_taskrun = ring_with(IORING_SETUP_SINGLE_ISSUER |
				    IORING_SETUP_DEFER_TASKRUN);
	return &P;
}

/* Probed only on demand: the test ring's SQ thread outlives the ring for
 * a moment and would show up beside the workers' own. */
static bool probe_sqpoll(void)
{
	static int done = -1;
	if (done < 0)
		done = ring_with(IORING_SETUP_SQPOLL);
	return done;
}

void probe_print(FILE *f)
{
	const struct probe *p = probe_get();
	fprintf(f, "kernel: %s\n", p->kernel);
	if (!p->io_uring) {
		fprintf(f, "io_uring: unavailable (%s)\n", arc_errname(p->io_uring_err));
		return;
	}
	fprintf(f, "io_uring: yes\n");
	if (p->buf_ring || p->buf_ring_err == -EINVAL)
		fprintf(f, "  provided buffer rings: %s\n", p->buf_ring ? "yes" : "no");
	else
		fprintf(f, "  provided buffer rings: no (%s)\n",
			arc_errname(p->buf_ring_err));
	fprintf(f, "  SINGLE_ISSUER|DEFER_TASKRUN: %s\n", p->defer_taskrun ? "yes" : "no");
	fprintf(f, "  SQPOLL: %s\n", probe_sqpoll() ? "yes" : "no");
	fprintf(f, "  NAPI busy poll: %s\n", p->napi ? "yes" : "no");
	fprintf(f, "  OP_SOCKET: %s\n", p->op_socket ? "yes" : "no");
	fprintf(f, "  OP_SEND_ZC: %s\n", p->op_send_zc ? "yes" : "no");
}

int probe_check(const struct config *cfg, char *err, size_t errlen)
{
	const struct probe *p = probe_get();
	if (!p->io_uring) {
		snprintf(err, errlen,
			 "io_uring_setup() failed: %s (is io_uring disabled in "
			 "/proc/sys/kernel/io_uring_disabled or by seccomp?)",
			 arc_errname(p->io_uring_err));
		return 1;
	}
	/* EINVAL: the kernel does not know the registration, and the rest
	 * of the ring's features (multishot accept, COOP_TASKRUN) are as new;
	 * anything else is a refusal (seccomp, an LSM) or a shortage, and
	 * splice mode needs no registration */
	if (!p->buf_ring && p->buf_ring_err == -EINVAL) {
		snprintf(err, errlen,
			 "this kernel (%s) lacks provided-buffer rings: "
			 "arctic-proxy needs Linux 5.19 or later", p->kernel);
		return 1;
	}
	if (cfg->io_mode != CFG_IO_SPLICE && !p->buf_ring) {
		bool refused = p->buf_ring_err == -EPERM || p->buf_ring_err == -EACCES;
		snprintf(err, errlen,
			 "io_uring_register(IORING_REGISTER_PBUF_RING) failed: %s%s; "
			 "ARCTIC_IO_MODE=splice does without",
			 arc_errname(p->buf_ring_err),
			 refused ? " (refused by seccomp or an LSM?)" : "");
		return 1;
	}
	/* SQPOLL is not probed here: a test ring's SQ thread would linger
	 * beside the workers'; a worker whose SQPOLL ring cannot be made
	 * stops the start with the kernel's reason. */
	if (cfg->napi_us && !p->napi) {
		snprintf(err, errlen,
			 "ARCTIC_NAPI_US: invalid value '%u' (io_uring NAPI busy "
			 "polling needs Linux 6.9+; this is %s)", cfg->napi_us,
			 p->kernel);
		return 2;
	}
	return 0;
}
