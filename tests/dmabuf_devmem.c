// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf I/O to device memory: buffers of the series' test exporter that
 * live in BAR 2 of QEMU's ivshmem-plain (no struct pages: MMIO ranges,
 * mapped for peer-to-peer DMA), registered with the NVMe namespace.
 *
 * The VM runner attaches the device (scripts/run-vm --devmem) in one of
 * two topologies and names it on the kernel command line
 * (dmabufrw_devmem):
 *   switch  the NVMe controller and the device behind one PCIe switch: the
 *           PCI core allows peer-to-peer DMA by bus address, and the data
 *           must move, verified through the exporter's CPU access to the
 *           BAR, a pread of the disk, and by the host, which reads the
 *           BAR's backing file after the VM (scripts/run-tests);
 *   root    both on the root bus: peer-to-peer DMA would go through a host
 *           bridge the kernel does not allow it for, so every registration
 *           is refused with EOPNOTSUPP and nothing moves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <drm/drm.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "dmabufrw.h"

/* the test exporter's PCI driver: it takes the ivshmem-plain not given to vfio-pci */
#define TEXP_DRIVER	"dma_buf_test_exporter"
#define KiB	1024UL
#define MiB	(1024UL * 1024)

/* What the last test leaves at the start of the BAR for the host to check. */
#define HOST_SEED	0x484f535400000001ULL
#define HOST_POS	(200 * MiB)
#define HOST_LEN	(1 * MiB)

FIXTURE(devmem) {
	struct io_uring ring;
	int ctl, fd;
	bool p2p;		/* switch topology: the data moves */
	uint64_t bar;		/* size of the device memory */
};

/* The size of BAR 2 of the ivshmem-plain device, or 0. */
static uint64_t bar_size(void)
{
	char name[256], path[512];
	struct stat st;

	if (pci_bound_to(TEXP_DRIVER, name, sizeof(name)))
		return 0;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource2", name);
	return stat(path, &st) ? 0 : st.st_size;
}

static int write_sysfs(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		ret = -errno;
	close(fd);
	return ret;
}

/* Wait until the exporter's books of @dbuf balance (workers let go). */
static int wait_let_go(int ctl, int dbuf, struct dmabuf_test_stats *st)
{
	for (int i = 0; i < 100; i++) {
		int ret = texp_stats(ctl, dbuf, st);

		if (ret)
			return ret;
		if (st->attaches == st->detaches && st->maps == st->unmaps)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

FIXTURE_SETUP(devmem)
{
	self->ctl = self->fd = -1;
	REQUIRE_DMABUF_IO();
	REQUIRE_DEVMEM(self->p2p);
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	self->bar = bar_size();
	ASSERT_LE(32 * MiB, self->bar) TH_LOG("no ivshmem-plain BAR 2 of 32 MiB or more");
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 4));
}

FIXTURE_TEARDOWN(devmem)
{
	if (self->fd >= 0) {
		io_uring_queue_exit(&self->ring);
		close(self->fd);
	}
	if (self->ctl >= 0)
		close(self->ctl);
}

/* The first byte of @len that is not zero, or -1. */
static long first_nonzero(const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i])
			return i;
	return -1;
}

/* Check the buffer at @off (the exporter reads the BAR with the CPU). */
static long devmem_check(int ctl, int dbuf, uint64_t off, size_t len,
			 uint64_t seed, uint64_t pos)
{
	void *buf = malloc(len);
	long bad = -2;

	if (buf && !texp_rw(ctl, dbuf, 0, off, buf, len))
		bad = pattern_check(buf, len, seed, pos);
	free(buf);
	return bad;
}

/* The first nonzero byte of the buffer's [@off, @off + @len), or -1. */
static long first_nonzero_devmem(int ctl, int dbuf, uint64_t off, size_t len)
{
	void *buf = malloc(len);
	long bad = -2;

	if (buf && !texp_rw(ctl, dbuf, 0, off, buf, len))
		bad = first_nonzero(buf, len);
	free(buf);
	return bad;
}

static int devmem_fill(int ctl, int dbuf, uint64_t off, size_t len,
		       uint64_t seed, uint64_t pos)
{
	void *buf = malloc(len);
	int ret = -ENOMEM;

	if (buf) {
		pattern_fill(buf, len, seed, pos);
		ret = texp_rw(ctl, dbuf, 1, off, buf, len);
	}
	free(buf);
	return ret;
}

/*
 * Register @dbuf in slot 0 of the fixture's ring for the namespace: true
 * behind the switch; false on the root bus, where the registration must
 * be refused with EOPNOTSUPP and the test has nothing to move.
 */
static bool devmem_register(struct __test_metadata *_metadata,
			    FIXTURE_DATA(devmem) *self, int dbuf)
{
	int ret = dmabufrw_register_dmabuf(&self->ring, 0, dbuf, self->fd);

	if (self->p2p) {
		EXPECT_EQ(0, ret) TH_LOG("register: %s", strerror(-ret));
		return !ret;
	}
	EXPECT_EQ(-EOPNOTSUPP, ret);
	return false;
}

/*
 * Device-memory buffers need the device and room in its BAR, are zeroed
 * when made and do not repeat; their memory is given back when they go.
 * Evicted to system memory, a buffer's BAR slice stays retired until it
 * is checked, so it cannot come back while the BAR is full; its contents
 * go and come back whole.
 */
TEST_F(devmem, buffers_come_from_the_bar_and_go_back_to_it)
{
	void *z = malloc(MiB);
	int a, b;

	const uint64_t half = self->bar / 2;

	ASSERT_NE(NULL, z);
	a = texp_create(self->ctl, half, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, a) TH_LOG("create: %s", strerror(-a));
	/* dirty it, free it, make it again: zeroed */
	ASSERT_EQ(0, devmem_fill(self->ctl, a, half - MiB, MiB, 1, 0));
	close(a);
	a = texp_create(self->ctl, half, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, a);
	ASSERT_EQ(0, texp_rw(self->ctl, a, 0, half - MiB, z, MiB));
	EXPECT_EQ(-1, first_nonzero(z, MiB));
	free(z);
	b = texp_create(self->ctl, half, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, b);
	/* the BAR is full */
	EXPECT_EQ(-ENOSPC, texp_create(self->ctl, 4096, DMABUF_TEST_F_DEVMEM));
	EXPECT_EQ(-EINVAL, texp_create(self->ctl, 4096, DMABUF_TEST_F_DEVMEM |
						     DMABUF_TEST_F_REPEAT));
	ASSERT_EQ(0, devmem_fill(self->ctl, a, 0, MiB, 0xe71c, 0));
	EXPECT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, a, 0));
	EXPECT_EQ(-1, devmem_check(self->ctl, a, 0, MiB, 0xe71c, 0));
	EXPECT_EQ(-ENOSPC, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, a, 0));
	EXPECT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_CHECK_RETIRED, a, 0));
	EXPECT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, a, 0));
	EXPECT_EQ(-1, devmem_check(self->ctl, a, 0, MiB, 0xe71c, 0));
	close(a);
	a = texp_create(self->ctl, half / 2, DMABUF_TEST_F_DEVMEM);
	EXPECT_LE(0, a);
	close(a);
	close(b);
}

/*
 * Registration attaches the buffer for the NVMe controller: allowed where
 * the PCI core lets the controller reach the BAR by peer-to-peer DMA
 * (switch), refused with EOPNOTSUPP elsewhere (root), with the exporter's
 * books balanced either way.
 */
TEST_F(devmem, registration_follows_the_p2p_topology)
{
	struct dmabuf_test_stats st;
	int dbuf, ret;

	for (int revoke_only = 0; revoke_only < 2; revoke_only++) {
		dbuf = texp_create(self->ctl, 8 * MiB, DMABUF_TEST_F_DEVMEM |
				   (revoke_only ? DMABUF_TEST_F_REVOKE_ONLY : 0));
		ASSERT_LE(0, dbuf);
		ret = dmabufrw_register_dmabuf(&self->ring, 0, dbuf, self->fd);
		if (self->p2p) {
			EXPECT_EQ(0, ret);
			EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd,
							  0, 0, 4096, 0));
			EXPECT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
		} else {
			EXPECT_EQ(-EOPNOTSUPP, ret);
			EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false,
							     self->fd, 0, 0, 4096, 0));
		}
		/* the registration is let go by a worker */
		EXPECT_EQ(0, wait_let_go(self->ctl, dbuf, &st));
		EXPECT_EQ(self->p2p ? 1 : 0, st.maps);
		EXPECT_EQ(self->p2p ? 1 : 0, st.attaches);
		close(dbuf);
	}
}

/* A DRM card of the vgem driver, open, or -1. */
static int open_vgem(void)
{
	for (int i = 0; i < 16; i++) {
		char path[32], name[16] = "";
		struct drm_version v = { .name = name, .name_len = sizeof(name) - 1 };
		int fd;

		snprintf(path, sizeof(path), "/dev/dri/card%d", i);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (!ioctl(fd, DRM_IOCTL_VERSION, &v) && !strcmp(name, "vgem"))
			return fd;
		close(fd);
	}
	return -1;
}

/*
 * An ordinary importer (vgem's PRIME import: a static attachment, as most
 * DRM drivers make, which cannot be revoked, takes no peer-to-peer memory
 * and has no PCI device) cannot attach device memory: the import fails
 * with EOPNOTSUPP and the exporter counts no attach, in either topology;
 * a buffer of pages from the same exporter imports.  Any one of the
 * three reasons refuses it: this shows the refusal, not which check.
 */
TEST_F(devmem, importers_without_peer_to_peer_are_refused)
{
	struct drm_prime_handle h = { .flags = DRM_CLOEXEC };
	struct drm_gem_close gc = { 0 };
	struct dmabuf_test_stats st;
	int card, dbuf, pbuf;

	card = open_vgem();
	if (card < 0)
		SKIP(return, "no vgem card (CONFIG_DRM_VGEM, module vgem)");
	pbuf = texp_create(self->ctl, MiB, 0);
	ASSERT_LE(0, pbuf);
	h.fd = pbuf;
	ASSERT_EQ(0, ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, &h))
		TH_LOG("importing pages: %s", strerror(errno));
	gc.handle = h.handle;
	EXPECT_EQ(0, ioctl(card, DRM_IOCTL_GEM_CLOSE, &gc));

	dbuf = texp_create(self->ctl, MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf);
	h.fd = dbuf;
	EXPECT_ERRNO(EOPNOTSUPP, ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, &h));
	ASSERT_EQ(0, texp_stats(self->ctl, dbuf, &st));
	EXPECT_EQ(0, st.attaches);
	EXPECT_EQ(0, st.maps);
	close(dbuf);
	close(pbuf);
	close(card);
}

/*
 * NVMe -> BAR (READ_FIXED) and BAR -> NVMe (WRITE_FIXED), 4 KiB to 1 MiB
 * at random places at queue depths 1, 8 and 64, and 8 MiB at once:
 * checked through the exporter's CPU view of the BAR and a pread of the
 * disk.  Where P2P is refused, nothing can be registered.
 */
TEST_F(devmem, nvme_moves_data_to_and_from_device_memory)
{
	const unsigned int qds[] = { 1, 8, 64 }, n = 16, slot = MiB;
	const uint64_t rd_seed = 0xde7e0001, wr_seed = 0xde7e0002;
	struct fixed_io x[16];
	int dbuf, guard;

	/*
	 * A guard buffer first, so that the one tested does not start at
	 * the BAR's first byte: a mapping that missed the slice's offset
	 * would read and write the guard.
	 */
	guard = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, guard);
	ASSERT_EQ(0, devmem_fill(self->ctl, guard, 0, 4 * MiB, 0x9a7d, 0));
	dbuf = texp_create(self->ctl, 16 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf);
	if (!devmem_register(_metadata, self, dbuf)) {
		close(dbuf);
		close(guard);
		return;
	}
	ASSERT_EQ(0, pattern_fill_fd(self->fd, 0, 16 * MiB, rd_seed, 0));
	srandom(0xde7e);
	for (unsigned int q = 0; q < 3; q++) {
		for (unsigned int i = 0; i < n; i++) {
			unsigned int len = (1 + random() % (slot / (4 * KiB))) * 4 * KiB;
			unsigned int room = (slot - len) / (4 * KiB);

			x[i].len = len;
			x[i].buf_off = i * slot + (random() % (room + 1)) * 4 * KiB;
			x[i].off = i * slot + (random() % (room + 1)) * 4 * KiB;
		}
		ASSERT_EQ(0, fixed_io_batch(&self->ring, false, self->fd, 0, x, n,
					    qds[q]));
		for (unsigned int i = 0; i < n; i++) {
			EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, x[i].buf_off,
						   x[i].len, rd_seed, x[i].off))
				TH_LOG("qd %u read %u", qds[q], i);
		}

		for (unsigned int i = 0; i < n; i++) {
			x[i].off += 16 * MiB + q * 16 * MiB;
			ASSERT_EQ(0, devmem_fill(self->ctl, dbuf, x[i].buf_off,
						 x[i].len, wr_seed, x[i].off));
		}
		ASSERT_EQ(0, fixed_io_batch(&self->ring, true, self->fd, 0, x, n,
					    qds[q]));
		for (unsigned int i = 0; i < n; i++) {
			EXPECT_EQ(-1, pattern_check_fd(self->fd, x[i].off, x[i].len,
						       wr_seed, x[i].off))
				TH_LOG("qd %u write %u", qds[q], i);
		}
	}

	/* 8 MiB in one I/O each way */
	ASSERT_EQ(8 * (int)MiB, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						  8 * MiB, 8 * MiB, 0));
	EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, 8 * MiB, 8 * MiB, rd_seed, 0));
	ASSERT_EQ(8 * (int)MiB, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0,
						  8 * MiB, 8 * MiB, 64 * MiB));
	EXPECT_EQ(-1, pattern_check_fd(self->fd, 64 * MiB, 8 * MiB, rd_seed, 0));
	EXPECT_EQ(-1, devmem_check(self->ctl, guard, 0, 4 * MiB, 0x9a7d, 0));
	close(dbuf);
	close(guard);
}

/*
 * A registered buffer in device memory revoked: I/O fails with ENODEV and
 * moves nothing; restored, the same registration maps it again and moves
 * the data.
 */
TEST_F(devmem, revoked_device_memory_fails_io_until_restored)
{
	struct dmabuf_test_stats st;
	int dbuf;

	dbuf = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM |
			   DMABUF_TEST_F_REVOKE_ONLY);
	ASSERT_LE(0, dbuf);
	if (!devmem_register(_metadata, self, dbuf)) {
		close(dbuf);
		return;
	}
	ASSERT_EQ(0, pattern_fill_fd(self->fd, 180 * MiB, 4 * MiB, 0x7e70, 180 * MiB));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096,
					  180 * MiB));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_REVOKE, dbuf, 0));
	ASSERT_EQ(0, texp_stats(self->ctl, dbuf, &st));
	EXPECT_EQ(0, st.live_maps);
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					     MiB, MiB, 180 * MiB + MiB));
	EXPECT_EQ(-1, first_nonzero_devmem(self->ctl, dbuf, MiB, MiB));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, dbuf, 0));
	ASSERT_EQ(4 * (int)MiB, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						  0, 4 * MiB, 180 * MiB));
	EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, 0, 4 * MiB, 0x7e70, 180 * MiB));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	EXPECT_EQ(0, wait_let_go(self->ctl, dbuf, &st));
	EXPECT_EQ(2, st.maps);
	close(dbuf);
}

/*
 * A registered buffer evicted to system memory and brought back, with
 * the I/O between: each move invalidates the NVMe's mapping, the next I/O
 * maps the memory the buffer is in now (pages, then the BAR again), reads
 * land there and writes come from there, and no device access reached
 * the memory left behind (poison intact).
 */
TEST_F(devmem, eviction_and_return_remap_the_io)
{
	const uint64_t len = MiB, pos = 188 * MiB;
	struct dmabuf_test_stats st;
	int dbuf;

	dbuf = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf);
	if (!devmem_register(_metadata, self, dbuf)) {
		close(dbuf);
		return;
	}
	ASSERT_EQ(0, pattern_fill_fd(self->fd, pos, 4 * len, 0xe1c7, pos));
	for (int move = 0; move < 3; move++) {
		/* in the BAR, in system memory, in the BAR again */
		ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						      move * len, len, pos + move * len));
		EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, move * len, len, 0xe1c7,
					   pos + move * len)) TH_LOG("move %d", move);
		ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0,
						      move * len, len,
						      pos + 4 * len + move * len));
		EXPECT_EQ(-1, pattern_check_fd(self->fd, pos + 4 * len + move * len, len,
					    0xe1c7, pos + move * len)) TH_LOG("move %d", move);
		if (move < 2)
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, dbuf, 0));
	}
	/* what the earlier moves carried along is still there */
	EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, 0, 3 * len, 0xe1c7, pos));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dbuf, 0));
	ASSERT_EQ(0, texp_stats(self->ctl, dbuf, &st));
	EXPECT_EQ(2, st.migrations);
	EXPECT_EQ(2, st.retired_checked);
	EXPECT_EQ(0, st.stale_bytes);
	EXPECT_EQ(3, st.maps);
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	EXPECT_EQ(0, wait_let_go(self->ctl, dbuf, &st));
	close(dbuf);
}

struct writer {
	int fd, dbuf, id, err;
	unsigned int rounds;
};

/* One ring, one registration, 2 MiB writes of its own slice of the BAR. */
static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	struct io_uring ring;
	int ret;

	ret = io_uring_queue_init(8, &ring, 0);
	if (!ret)
		ret = io_uring_register_buffers_sparse(&ring, 1);
	if (!ret)
		ret = dmabufrw_register_dmabuf(&ring, 0, w->dbuf, w->fd);
	for (unsigned int r = 0; !ret && r < w->rounds; r++) {
		ret = dmabufrw_rw_fixed(&ring, true, w->fd, 0, w->id * 2 * MiB,
					2 * MiB, (96 + (r * 8 + w->id) * 2) * MiB);
		ret = ret == 2 * (int)MiB ? 0 : ret < 0 ? ret : -EIO;
	}
	w->err = ret;
	io_uring_queue_exit(&ring);
	return NULL;
}

/*
 * Eight writers at once, each on its own ring and registration of one
 * buffer, 2 MiB chunks of device memory to the disk (the load under which
 * an earlier importer was reported to corrupt 0.3-0.5 % of chunks): every
 * chunk lands whole.
 */
TEST_F(devmem, eight_concurrent_writers_land_every_chunk)
{
	const unsigned int nw = 8, rounds = 4;
	struct writer w[8];
	pthread_t t[8];
	int dbuf;

	dbuf = texp_create(self->ctl, nw * 2 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf);
	if (!devmem_register(_metadata, self, dbuf)) {
		close(dbuf);
		return;
	}
	for (unsigned int i = 0; i < nw; i++)
		ASSERT_EQ(0, devmem_fill(self->ctl, dbuf, i * 2 * MiB, 2 * MiB,
					 0xc0c0 + i, 0));
	for (unsigned int i = 0; i < nw; i++) {
		w[i] = (struct writer){ .fd = self->fd, .dbuf = dbuf, .id = i,
					.rounds = rounds };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, writer_thread, &w[i]));
	}
	for (unsigned int i = 0; i < nw; i++) {
		pthread_join(t[i], NULL);
		EXPECT_EQ(0, w[i].err) TH_LOG("writer %u: %s", i, strerror(-w[i].err));
	}
	for (unsigned int r = 0; r < rounds; r++)
		for (unsigned int i = 0; i < nw; i++) {
			void *buf;

			ASSERT_EQ(0, posix_memalign(&buf, 4096, 2 * MiB));
			ASSERT_EQ((ssize_t)(2 * MiB),
				  pread(self->fd, buf, 2 * MiB, (96 + (r * 8 + i) * 2) * MiB));
			EXPECT_EQ(-1, pattern_check(buf, 2 * MiB, 0xc0c0 + i, 0))
				TH_LOG("round %u writer %u", r, i);
			free(buf);
		}
	close(dbuf);
}

/*
 * The PCI device removed (as by hot-unplug) with buffers in its memory,
 * one of them registered and under I/O: the removal waits for the I/O in
 * flight, each I/O completes whole or fails with ENODEV, and the buffers
 * are revoked for good, as vfio-pci does with its own: I/O, CPU access,
 * migration and restores fail with ENODEV, and no new buffer can be made;
 * one evicted to system memory before is revoked too, and registering it
 * fails with ENODEV (it keeps the device's description alive: before,
 * that was freed under it).  Rescanned,
 * the device is bound again and serves new buffers.  Before the fix, the
 * buffers kept using the BAR mapping and P2P provider of the removed
 * device (use-after-free).
 */
TEST_F(devmem, removing_the_device_revokes_its_buffers_for_good)
{
	const unsigned int n = 32, len = 128 * KiB;
	char name[256], path[512];
	struct dmabuf_test_stats st;
	struct io_uring_cqe *cqe;
	unsigned int whole = 0;
	bool registered;
	void *z = calloc(1, 4096);
	int dbuf, idle, evicted;

	ASSERT_NE(NULL, z);
	ASSERT_EQ(0, pci_bound_to(TEXP_DRIVER, name, sizeof(name)));
	dbuf = texp_create(self->ctl, n * len, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf);
	idle = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM |
			   DMABUF_TEST_F_REVOKE_ONLY);
	ASSERT_LE(0, idle);
	evicted = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, evicted);
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, evicted, 0));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_CHECK_RETIRED, evicted, 0));
	registered = devmem_register(_metadata, self, dbuf);
	if (registered) {
		ASSERT_EQ(0, pattern_fill_fd(self->fd, 184 * MiB, n * len, 0x4e30, 184 * MiB));
		for (unsigned int i = 0; i < n; i++)
			io_uring_prep_read_fixed(io_uring_get_sqe(&self->ring), self->fd,
						 (void *)(uintptr_t)(i * len), len,
						 184 * MiB + i * len, 0);
		ASSERT_EQ((int)n, io_uring_submit(&self->ring));
	}

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", name);
	ASSERT_EQ(0, write_sysfs(path, "1"));

	for (unsigned int i = 0; registered && i < n; i++) {
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_TRUE(cqe->res == (int)len || cqe->res == -ENODEV)
			TH_LOG("I/O in flight at removal: %d", cqe->res);
		whole += cqe->res == (int)len;
		io_uring_cqe_seen(&self->ring, cqe);
	}
	if (registered) {
		TH_LOG("%u of %u reads done whole before the device went", whole, n);
		EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						     0, len, 184 * MiB));
	}
	for (int i = 0; i < 3; i++) {
		int b = i == 2 ? evicted : i ? idle : dbuf;

		EXPECT_EQ(-ENODEV, texp_rw(self->ctl, b, 0, 0, z, 4096));
		EXPECT_EQ(-ENODEV, texp_rw(self->ctl, b, 1, 0, z, 4096));
		EXPECT_EQ(-ENODEV, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, b, 0));
		EXPECT_EQ(-ENODEV, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, b, 0));
		ASSERT_EQ(0, texp_stats(self->ctl, b, &st));
		EXPECT_EQ(0, st.live_maps);
		EXPECT_EQ(1, st.revokes);
	}
	EXPECT_EQ(-ENODEV, texp_create(self->ctl, 4096, DMABUF_TEST_F_DEVMEM));
	if (registered) {
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
		EXPECT_EQ(0, wait_let_go(self->ctl, dbuf, &st));
	}
	/* the evicted buffer alone keeps the device's description now */
	close(idle);
	close(dbuf);
	EXPECT_EQ(-ENODEV, dmabufrw_register_dmabuf(&self->ring, 1, evicted, self->fd));
	EXPECT_EQ(-ENODEV, texp_rw(self->ctl, evicted, 0, 0, z, 4096));
	close(evicted);

	ASSERT_EQ(0, write_sysfs("/sys/bus/pci/rescan", "1"));
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", name);
	for (int i = 0; i < 200 && access(path, F_OK); i++)
		usleep(50000);
	ASSERT_EQ(0, access(path, F_OK)) TH_LOG("%s not bound again", name);
	dbuf = texp_create(self->ctl, 4 * MiB, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf) TH_LOG("create after rescan: %s", strerror(-dbuf));
	if (devmem_register(_metadata, self, dbuf)) {
		ASSERT_EQ(4 * (int)MiB, dmabufrw_rw_fixed(&self->ring, false, self->fd,
							  0, 0, 4 * MiB, 184 * MiB));
		EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, 0, 4 * MiB, 0x4e30,
					   184 * MiB));
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	}
	close(dbuf);
	free(z);
}

/*
 * Last: a READ_FIXED into the start of the BAR that the host checks in the
 * BAR's backing file once the VM is done (run-tests): the data reached the
 * memory itself, not only what the guest's CPU reads back.
 */
TEST_F(devmem, the_host_sees_what_the_nvme_wrote)
{
	int dbuf;

	/*
	 * All of the BAR, so that the buffer starts at its first byte: the
	 * buffers of the tests before may still be let go by workers.
	 */
	for (int i = 0; i < 100; i++) {
		dbuf = texp_create(self->ctl, self->bar, DMABUF_TEST_F_DEVMEM);
		if (dbuf != -ENOSPC)
			break;
		usleep(50000);
	}
	ASSERT_LE(0, dbuf) TH_LOG("create: %s", strerror(-dbuf));
	if (!devmem_register(_metadata, self, dbuf)) {
		close(dbuf);
		return;
	}
	ASSERT_EQ(0, pattern_fill_fd(self->fd, HOST_POS, HOST_LEN, HOST_SEED, HOST_POS));
	ASSERT_EQ((int)HOST_LEN, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						   0, HOST_LEN, HOST_POS));
	EXPECT_EQ(-1, devmem_check(self->ctl, dbuf, 0, HOST_LEN, HOST_SEED, HOST_POS));
	printf("# devmem-host-check: offset=0 len=%lu seed=%llu pos=%lu\n",
	       HOST_LEN, (unsigned long long)HOST_SEED, HOST_POS);
	close(dbuf);
}

TEST_HARNESS_MAIN
