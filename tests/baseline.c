// SPDX-License-Identifier: GPL-2.0
/*
 * Baseline tests of the test rig: what the dmabuf-rw series builds on must
 * work on the kernel under test, patched or not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/udmabuf.h>
#include <linux/dma-buf.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "dmabufrw.h"

#define MiB	(1024UL * 1024)

static uint64_t disk_size(int fd)
{
	uint64_t size = 0;

	return ioctl(fd, BLKGETSIZE64, &size) < 0 ? 0 : size;
}

/* Submit everything queued and reap @n completions, each expected to be @len. */
static int reap(struct io_uring *ring, unsigned int n, unsigned int len)
{
	struct io_uring_cqe *cqe;
	int ret = 0;

	io_uring_submit(ring);
	while (n--) {
		if (io_uring_wait_cqe(ring, &cqe))
			return -EIO;
		if (cqe->res != (int)len && !ret)
			ret = cqe->res < 0 ? cqe->res : -EIO;
		io_uring_cqe_seen(ring, cqe);
	}
	return ret;
}

/*
 * WRITE_FIXED a pattern to 64 scattered places on the NVMe namespace, read it
 * back with READ_FIXED into another registered buffer and with plain pread,
 * and check every byte.
 */
TEST(fixed_buffers_round_trip_on_nvme)
{
	const unsigned int chunk = 16384, nr = 64;
	struct io_uring ring;
	struct iovec iov[2];
	uint64_t offs[64], size, seed = 0x5eed0001;
	void *wbuf, *rbuf, *pbuf;
	int fd, i;

	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd) TH_LOG("open %s: %s", NVME_DEV, strerror(errno));
	size = disk_size(fd);
	ASSERT_LE(64 * MiB, size);
	ASSERT_EQ(0, io_uring_queue_init(32, &ring, 0));
	ASSERT_EQ(0, posix_memalign(&wbuf, 4096, MiB));
	ASSERT_EQ(0, posix_memalign(&rbuf, 4096, MiB));
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, chunk));
	iov[0] = (struct iovec){ wbuf, MiB };
	iov[1] = (struct iovec){ rbuf, MiB };
	ASSERT_EQ(0, io_uring_register_buffers(&ring, iov, 2));

	srandom(42);
	for (i = 0; i < (int)nr; i++) {
		/* one chunk per MiB of disk, at a random 4K offset inside it */
		offs[i] = i * MiB + (random() % (MiB / 4096 - chunk / 4096)) * 4096;
		pattern_fill(wbuf + i * chunk, chunk, seed, offs[i]);
	}
	for (i = 0; i < (int)nr; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		if (!sqe) {
			ASSERT_EQ(0, reap(&ring, 32, chunk));
			sqe = io_uring_get_sqe(&ring);
		}
		io_uring_prep_write_fixed(sqe, fd, wbuf + i * chunk, chunk, offs[i], 0);
	}
	ASSERT_EQ(0, reap(&ring, 32, chunk));

	memset(rbuf, 0, MiB);
	for (i = 0; i < (int)nr; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		if (!sqe) {
			ASSERT_EQ(0, reap(&ring, 32, chunk));
			sqe = io_uring_get_sqe(&ring);
		}
		io_uring_prep_read_fixed(sqe, fd, rbuf + i * chunk, chunk, offs[i], 1);
	}
	ASSERT_EQ(0, reap(&ring, 32, chunk));

	for (i = 0; i < (int)nr; i++) {
		ASSERT_EQ(-1, pattern_check(rbuf + i * chunk, chunk, seed, offs[i]))
			TH_LOG("READ_FIXED chunk %d at disk offset %llu differs", i,
			       (unsigned long long)offs[i]);
		ASSERT_EQ((ssize_t)chunk, pread(fd, pbuf, chunk, offs[i]));
		ASSERT_EQ(-1, pattern_check(pbuf, chunk, seed, offs[i]))
			TH_LOG("pread of chunk %d differs: the write did not land", i);
	}
	io_uring_queue_exit(&ring);
	close(fd);
}

/*
 * 4 KiB random READ_FIXED at queue depth 32 for a few seconds: every I/O must
 * succeed.  The IOPS are printed for the record only (TCG and the debug
 * kernel make them meaningless as a speed figure: see the benchmark).
 */
TEST(fixed_buffer_random_reads_at_qd32_all_succeed)
{
	const unsigned int qd = 32, bs = 4096;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	struct iovec iov;
	uint64_t blocks, done = 0, inflight = 0;
	double start, end;
	void *buf;
	int fd;

	fd = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, fd);
	blocks = disk_size(fd) / bs;
	ASSERT_LT(0, blocks);
	ASSERT_EQ(0, io_uring_queue_init(qd, &ring, 0));
	ASSERT_EQ(0, posix_memalign(&buf, 4096, qd * bs));
	iov = (struct iovec){ buf, qd * bs };
	ASSERT_EQ(0, io_uring_register_buffers(&ring, &iov, 1));

	srandom(7);
	start = now_sec();
	end = start + 3;
	for (;;) {
		while (inflight < qd && now_sec() < end) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			unsigned int slot = (done + inflight) % qd;

			io_uring_prep_read_fixed(sqe, fd, buf + slot * bs, bs,
						 (random() % blocks) * bs, 0);
			inflight++;
		}
		if (!inflight)
			break;
		ASSERT_LE(0, io_uring_submit_and_wait(&ring, 1));
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			ASSERT_EQ((int)bs, cqe->res);
			io_uring_cqe_seen(&ring, cqe);
			inflight--;
			done++;
		}
	}
	ASSERT_LT(0, done);
	printf("# fixed-buffer 4K random read QD%u: %llu I/Os, %.0f IOPS (debug kernel, TCG)\n",
	       qd, (unsigned long long)done, done / (now_sec() - start));
	io_uring_queue_exit(&ring);
	close(fd);
}

/*
 * A udmabuf made from a sealed memfd exposes the memfd's pages: what the CPU
 * writes through one mapping is read through the other, both ways.
 */
TEST(udmabuf_from_sealed_memfd_shares_pages_with_it)
{
	const size_t size = 2 * MiB;
	void *dmap, *mmap_fd;
	int memfd, dfd;

	dfd = dmabufrw_alloc_udmabuf(size, &memfd);
	ASSERT_LE(0, dfd) TH_LOG("udmabuf: %s", strerror(-dfd));
	ASSERT_EQ((int64_t)size, dmabufrw_size(dfd));
	mmap_fd = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, mmap_fd);
	dmap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, 0);
	ASSERT_NE(MAP_FAILED, dmap);

	pattern_fill(mmap_fd, size, 1, 0);
	ASSERT_EQ(0, dmabufrw_cpu_begin(dfd, DMA_BUF_SYNC_READ));
	EXPECT_EQ(-1, pattern_check(dmap, size, 1, 0));
	ASSERT_EQ(0, dmabufrw_cpu_end(dfd, DMA_BUF_SYNC_READ));

	ASSERT_EQ(0, dmabufrw_cpu_begin(dfd, DMA_BUF_SYNC_WRITE));
	pattern_fill(dmap, size, 2, 0);
	ASSERT_EQ(0, dmabufrw_cpu_end(dfd, DMA_BUF_SYNC_WRITE));
	EXPECT_EQ(-1, pattern_check(mmap_fd, size, 2, 0));

	munmap(dmap, size);
	munmap(mmap_fd, size);
	close(dfd);
	close(memfd);
}

/* udmabuf insists on F_SEAL_SHRINK: pages must not vanish under a device. */
TEST(udmabuf_rejects_unsealed_memfd)
{
	struct udmabuf_create create = { .size = MiB };
	int memfd, devfd;

	memfd = memfd_create("unsealed", MFD_ALLOW_SEALING);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, ftruncate(memfd, MiB));
	devfd = open("/dev/udmabuf", O_RDWR);
	ASSERT_LE(0, devfd);
	create.memfd = memfd;
	EXPECT_ERRNO(EINVAL, ioctl(devfd, UDMABUF_CREATE, &create));
	close(devfd);
	close(memfd);
}

/* A system dma-heap buffer has the asked size and keeps what the CPU wrote. */
TEST(system_heap_buffer_is_mmappable)
{
	const size_t size = 4 * MiB;
	void *map;
	int fd;

	fd = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, fd) TH_LOG("dma-heap system: %s", strerror(-fd));
	ASSERT_EQ((int64_t)size, dmabufrw_size(fd));
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, dmabufrw_cpu_begin(fd, DMA_BUF_SYNC_WRITE));
	pattern_fill(map, size, 3, 0);
	ASSERT_EQ(0, dmabufrw_cpu_end(fd, DMA_BUF_SYNC_WRITE));
	munmap(map, size);

	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, dmabufrw_cpu_begin(fd, DMA_BUF_SYNC_READ));
	EXPECT_EQ(-1, pattern_check(map, size, 3, 0));
	ASSERT_EQ(0, dmabufrw_cpu_end(fd, DMA_BUF_SYNC_READ));
	munmap(map, size);
	close(fd);
}

/*
 * The NVMe controller sits behind the IOMMU in the mode the host booted
 * (dmabufrw_iommu): strict -> DMA domain, lazy -> DMA-FQ, pt -> identity,
 * none -> no IOMMU group at all.
 */
TEST(nvme_sits_behind_the_iommu_mode_booted)
{
	const char *mode = getenv("dmabufrw_iommu"), *want;
	char path[PATH_MAX], type[64];
	struct stat st;
	int has_group;

	ASSERT_NE(NULL, mode) TH_LOG("dmabufrw_iommu not on the kernel command line");
	if (!strcmp(mode, "strict"))
		want = "DMA";
	else if (!strcmp(mode, "lazy"))
		want = "DMA-FQ";
	else if (!strcmp(mode, "pt"))
		want = "identity";
	else
		want = NULL;

	snprintf(path, sizeof(path), "%s",
		 nvme_path("/sys/block/%s/device/device/iommu_group"));
	ASSERT_EQ(0, stat(nvme_path("/sys/block/%s/device/device"), &st));
	has_group = stat(path, &st) == 0;
	if (!want) {
		EXPECT_FALSE(has_group) TH_LOG("NVMe has an IOMMU group without an IOMMU");
		return;
	}
	ASSERT_TRUE(has_group) TH_LOG("NVMe has no IOMMU group under mode %s", mode);
	snprintf(path, sizeof(path), "%s",
		 nvme_path("/sys/block/%s/device/device/iommu_group/type"));
	ASSERT_LT(0, read_text(path, type, sizeof(type)));
	EXPECT_STREQ(want, type);
}

TEST_HARNESS_MAIN
