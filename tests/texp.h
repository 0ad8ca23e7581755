/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers for the dma-buf test exporter (CONFIG_DMABUF_TEST_EXPORTER of the
 * series): buffers that migrate, are revoked and carry fences on request.
 * All return 0 (or an fd) on success and -errno on failure.
 */
#ifndef DMABUFRW_TEST_TEXP_H
#define DMABUFRW_TEST_TEXP_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "dma-buf-test-exporter-uapi.h"

#define TEXP_DEV	"/dev/dma_buf_test_exporter"

static inline int texp_ret(int r)
{
	return r < 0 ? -errno : r;
}

static inline int texp_open(void)
{
	return texp_ret(open(TEXP_DEV, O_RDWR | O_CLOEXEC));
}

/* A new buffer of @size bytes; DMABUF_TEST_F_REVOKE_ONLY in @flags or not. */
static inline int texp_create(int ctl, uint64_t size, unsigned int flags)
{
	struct dmabuf_test_create c = { .size = size, .flags = flags };
	int r = ioctl(ctl, DMABUF_TEST_IOC_CREATE, &c);

	return r < 0 ? -errno : c.fd;
}

/* MIGRATE, REVOKE, RESTORE, CHECK_RETIRED, FENCE_ADD, FENCE_SIGNAL */
static inline int texp_op(int ctl, unsigned long cmd, int fd, unsigned int arg)
{
	struct dmabuf_test_op op = { .fd = fd, .arg = arg };

	return texp_ret(ioctl(ctl, cmd, &op));
}

/* texp_op(), and in @took how long the exporter took (an invalidation). */
static inline int texp_op_timed(int ctl, unsigned long cmd, int fd, double *took)
{
	double t0 = now_sec();
	int ret = texp_op(ctl, cmd, fd, 0);

	*took = now_sec() - t0;
	return ret;
}

static inline int texp_rw(int ctl, int fd, int write, uint64_t offset,
			  void *p, uint64_t len)
{
	struct dmabuf_test_rw rw = {
		.fd = fd, .flags = write ? DMABUF_TEST_RW_WRITE : 0,
		.offset = offset, .len = len, .ptr = (uintptr_t)p,
	};

	return texp_ret(ioctl(ctl, DMABUF_TEST_IOC_RW, &rw));
}

static inline int texp_delays(int ctl, int fd, unsigned int map_us,
			      unsigned int unmap_us)
{
	struct dmabuf_test_delays d = {
		.fd = fd, .map_delay_us = map_us, .unmap_delay_us = unmap_us,
	};

	return texp_ret(ioctl(ctl, DMABUF_TEST_IOC_SET_DELAYS, &d));
}

static inline int texp_stats(int ctl, int fd, struct dmabuf_test_stats *st)
{
	st->fd = fd;
	return texp_ret(ioctl(ctl, DMABUF_TEST_IOC_STATS, st));
}

/*
 * Durations of the buffer's last invalidations in ns, oldest first, at most
 * @nr of them.  Returns how many.
 */
static inline int texp_latencies(int ctl, int fd, uint64_t *ns, unsigned int nr)
{
	struct dmabuf_test_latencies l = {
		.fd = fd, .nr = nr, .ptr = (uintptr_t)ns,
	};
	int r = ioctl(ctl, DMABUF_TEST_IOC_LATENCIES, &l);

	return r < 0 ? -errno : (int)l.nr;
}

#endif
