// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf read/write via io_uring: registration and round trips between the
 * emulated NVMe namespace and real exporters (udmabuf, the system heap).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "dmabufrw.h"

#define MiB	(1024UL * 1024)

/* Submit one fixed read or write and return its result. */
static int rw_fixed(struct io_uring *ring, bool write, int fd, unsigned int idx,
		    uint64_t buf_off, unsigned int len, uint64_t disk_off)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int ret;

	if (write)
		io_uring_prep_write_fixed(sqe, fd, (void *)(uintptr_t)buf_off,
					  len, disk_off, idx);
	else
		io_uring_prep_read_fixed(sqe, fd, (void *)(uintptr_t)buf_off,
					 len, disk_off, idx);
	io_uring_submit(ring);
	if (io_uring_wait_cqe(ring, &cqe))
		return -EIO;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret;
}

FIXTURE(dmabuf_rw) {
	struct io_uring ring;
	int fd;
};

FIXTURE_SETUP(dmabuf_rw)
{
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 8));
}

FIXTURE_TEARDOWN(dmabuf_rw)
{
	io_uring_queue_exit(&self->ring);
	close(self->fd);
}

/*
 * WRITE_FIXED a pattern from a udmabuf to the disk, READ_FIXED it back into
 * a system-heap dma-buf, and check it through the heap buffer's CPU view
 * and through a plain pread of the disk.
 */
TEST_F(dmabuf_rw, udmabuf_to_disk_to_heap_round_trip)
{
	const size_t size = 4 * MiB, len = 1 * MiB;
	const uint64_t src_off = 64 * 1024, dst_off = 256 * 1024;
	const uint64_t disk_off = 3 * MiB, seed = 0xd1ab;
	int memfd, ubuf, heap;
	void *umap, *hmap, *pbuf;

	ubuf = dmabufrw_alloc_udmabuf(size, &memfd);
	ASSERT_LE(0, ubuf);
	heap = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, heap);
	umap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, umap);
	pattern_fill(umap + src_off, len, seed, disk_off);

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, ubuf, self->fd));
	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 1, heap, self->fd));

	ASSERT_EQ((int)len, rw_fixed(&self->ring, true, self->fd, 0, src_off,
				     len, disk_off));
	ASSERT_EQ((int)len, rw_fixed(&self->ring, false, self->fd, 1, dst_off,
				     len, disk_off));

	hmap = mmap(NULL, size, PROT_READ, MAP_SHARED, heap, 0);
	ASSERT_NE(MAP_FAILED, hmap);
	ASSERT_EQ(0, dmabufrw_cpu_begin(heap, 1, 0));
	EXPECT_EQ(-1, pattern_check(hmap + dst_off, len, seed, disk_off));
	ASSERT_EQ(0, dmabufrw_cpu_end(heap, 1, 0));

	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, len));
	ASSERT_EQ((ssize_t)len, pread(self->fd, pbuf, len, disk_off));
	EXPECT_EQ(-1, pattern_check(pbuf, len, seed, disk_off));

	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 1));
	free(pbuf);
	munmap(hmap, size);
	munmap(umap, size);
	close(heap);
	close(ubuf);
	close(memfd);
}

/* Registration refuses what it cannot serve, each with its own errno. */
TEST_F(dmabuf_rw, registration_errors)
{
	int ubuf, memfd, plain;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);

	/* not a dma-buf */
	EXPECT_EQ(-EINVAL, io_uring_register_dmabuf(&self->ring, 0, memfd, self->fd));
	/* not a file descriptor */
	EXPECT_EQ(-EBADF, io_uring_register_dmabuf(&self->ring, 0, 1000, self->fd));
	EXPECT_EQ(-EBADF, io_uring_register_dmabuf(&self->ring, 0, ubuf, 1000));
	/* target without O_DIRECT */
	plain = open(NVME_DEV, O_RDWR);
	ASSERT_LE(0, plain);
	EXPECT_EQ(-EINVAL, io_uring_register_dmabuf(&self->ring, 0, ubuf, plain));
	close(plain);
	/* a target not opened O_DIRECT is refused before its type is looked at */
	EXPECT_EQ(-EINVAL, io_uring_register_dmabuf(&self->ring, 0, ubuf, memfd));

	close(ubuf);
	close(memfd);
}

/*
 * I/O on another file, out of range, misaligned, or writing through a
 * read-only target fails.
 */
TEST_F(dmabuf_rw, io_errors)
{
	int ubuf, memfd, other, ro;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, ubuf, self->fd));

	other = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, other);
	EXPECT_EQ(-EBADF, rw_fixed(&self->ring, false, other, 0, 0, 4096, 0));
	close(other);

	EXPECT_EQ(-EFAULT, rw_fixed(&self->ring, false, self->fd, 0, MiB - 4096,
				    8192, 0));
	/* offset and length must suit the device's DMA alignment and LBA */
	EXPECT_EQ(-EINVAL, rw_fixed(&self->ring, false, self->fd, 0, 101,
				    4096, 0));
	EXPECT_EQ(-EINVAL, rw_fixed(&self->ring, false, self->fd, 0, 0,
				    4095, 0));

	ro = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ro);
	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 2, ubuf, ro));
	EXPECT_EQ(4096, rw_fixed(&self->ring, false, ro, 2, 0, 4096, 0));
	EXPECT_GT(0, rw_fixed(&self->ring, true, ro, 2, 0, 4096, 0));
	close(ro);

	close(ubuf);
	close(memfd);
}

TEST_HARNESS_MAIN
