/* probe: what the running kernel's io_uring offers, found at start. */
#ifndef ARCTIC_PROBE_H
#define ARCTIC_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct config;

struct probe {
	bool io_uring;        /* io_uring_setup works at all */
	int io_uring_err;     /* -errno when it does not */
	bool defer_taskrun;   /* IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN (6.1) */
	bool buf_ring;        /* IORING_REGISTER_PBUF_RING (5.19) */
	int buf_ring_err;     /* -errno when it does not (-EINVAL: unknown) */
	bool napi;            /* IORING_REGISTER_NAPI (6.9) */
	bool op_socket;       /* IORING_OP_SOCKET (5.19) */
	bool op_send_zc;      /* IORING_OP_SEND_ZC (6.0) */
	char kernel[160];
};

/* Runs the probes once (cached). */
const struct probe *probe_get(void);

/* Writes the feature list (for --version). */
void probe_print(FILE *f);

/* Checks that the kernel can run cfg: 0, or the exit status with a
 * one-line reason in err (never a silent fallback): 1 when the kernel
 * cannot run the proxy (io_uring unavailable or refused, too old), 2 when
 * a setting asks for what it lacks. */
int probe_check(const struct config *cfg, char *err, size_t errlen);

/* Local definitions of what liburing 2.3's headers lack. */
#define ARC_IORING_REGISTER_NAPI 27
#define ARC_IORING_UNREGISTER_NAPI 28
struct arc_io_uring_napi {
	unsigned int busy_poll_to;
	unsigned char prefer_busy_poll;
	unsigned char pad[3];
	unsigned long long resv;
};

#ifdef __cplusplus
}
#endif

#endif
