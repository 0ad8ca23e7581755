// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf read/write via io_uring: registration and round trips between the
 * emulated NVMe namespace and real exporters (udmabuf, the system heap).
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
#include <sys/wait.h>
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/dma-buf.h>
#include <linux/nvme_ioctl.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "dmabufrw.h"

#define MiB	(1024UL * 1024)

/*
 * Number of io-wq worker threads of this process: all of them, or (@tid not
 * 0) those serving thread @tid, which are named "iou-wrk-<tid>".
 */
static int iowq_workers(pid_t tid)
{
	struct dirent *de;
	char path[300], comm[32], want[32];
	int n = 0;
	DIR *d;

	if (tid)
		snprintf(want, sizeof(want), "iou-wrk-%d", tid);
	else
		strcpy(want, "iou-wrk-");

	d = opendir("/proc/self/task");
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		if (read_text(path, comm, sizeof(comm)) > 0 &&
		    !strncmp(comm, want, strlen(want)) &&
		    (!tid || comm[strlen(want)] == '\0' ||
		     comm[strlen(want)] == '\n'))
			n++;
	}
	closedir(d);
	return n;
}

/*
 * A udmabuf (CPU view through its memfd) in slot 0 and a system-heap buffer
 * (CPU view through its own mapping) in slot 1, both registered for @fd.
 */
struct buf_pair {
	size_t size;
	int memfd, ubuf, heap;
	void *umap, *hmap;
};

static void pair_setup(struct __test_metadata *_metadata, struct buf_pair *p,
		       struct io_uring *ring, int fd, size_t size)
{
	p->size = size;
	p->ubuf = dmabufrw_alloc_udmabuf(size, &p->memfd);
	ASSERT_LE(0, p->ubuf);
	p->heap = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, p->heap);
	p->umap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, p->memfd, 0);
	ASSERT_NE(MAP_FAILED, p->umap);
	p->hmap = mmap(NULL, size, PROT_READ, MAP_SHARED, p->heap, 0);
	ASSERT_NE(MAP_FAILED, p->hmap);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(ring, 0, p->ubuf, fd));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(ring, 1, p->heap, fd));
}

static void pair_teardown(struct buf_pair *p, struct io_uring *ring)
{
	dmabufrw_unregister_slot(ring, 0);
	dmabufrw_unregister_slot(ring, 1);
	munmap(p->hmap, p->size);
	munmap(p->umap, p->size);
	close(p->heap);
	close(p->ubuf);
	close(p->memfd);
}

FIXTURE(dmabuf_rw) {
	struct io_uring ring;
	int fd;
};

FIXTURE_SETUP(dmabuf_rw)
{
	REQUIRE_DMABUF_IO();
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
	const size_t len = 1 * MiB;
	const uint64_t src_off = 64 * 1024, dst_off = 256 * 1024;
	const uint64_t disk_off = 3 * MiB, seed = 0xd1ab;
	struct buf_pair p;
	void *pbuf;

	pair_setup(_metadata, &p, &self->ring, self->fd, 4 * MiB);
	pattern_fill(p.umap + src_off, len, seed, disk_off);

	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0,
					      src_off, len, disk_off));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, self->fd, 1,
					      dst_off, len, disk_off));

	ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
	EXPECT_EQ(-1, pattern_check(p.hmap + dst_off, len, seed, disk_off));
	ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));

	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, len));
	ASSERT_EQ((ssize_t)len, pread(self->fd, pbuf, len, disk_off));
	EXPECT_EQ(-1, pattern_check(pbuf, len, seed, disk_off));
	free(pbuf);
	pair_teardown(&p, &self->ring);
}

/* Registration refuses what it cannot serve, each with its documented errno. */
TEST_F(dmabuf_rw, registration_errors)
{
	int ubuf, memfd, plain;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);

	/* not a dma-buf */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf(&self->ring, 0, memfd, self->fd));
	/* not a file descriptor */
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf(&self->ring, 0, 1000, self->fd));
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, 1000));
	/* target without O_DIRECT */
	plain = open(NVME_DEV, O_RDWR);
	ASSERT_LE(0, plain);
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, plain));
	close(plain);
	/* a target not opened O_DIRECT is refused before its type is looked at */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, memfd));
	/* an O_DIRECT file whose type cannot do dma-buf I/O (tmpfs) */
	plain = open("/tmp/regular", O_RDWR | O_CREAT | O_DIRECT, 0600);
	ASSERT_LE(0, plain) TH_LOG("tmpfs O_DIRECT: %s", strerror(errno));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, plain));
	close(plain);
	unlink("/tmp/regular");

	/* nothing was registered: the slot is still empty */
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, 0));

	close(ubuf);
	close(memfd);
}

/*
 * I/O on another device, out of range, misaligned, or writing through a
 * read-only target fails.
 */
TEST_F(dmabuf_rw, io_errors)
{
	int ubuf, memfd, other, ro;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, self->fd));

	/*
	 * A registration serves every file of its block device, and no other
	 * device, not even another namespace of the same controller (the
	 * device the dma-buf is mapped for).
	 */
	other = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, other);
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, other, 0, 0, 4096, 0));
	close(other);
	other = open(nvme_slow_path("/dev/%s"), O_RDWR | O_DIRECT);
	ASSERT_LE(0, other);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, false, other, 0, 0, 4096, 0));
	close(other);

	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, MiB - 4096,
					     8192, 0));
	/* offset and length must suit the device's DMA alignment and LBA */
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 101,
					     4096, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4095, 0));

	ro = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ro);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 2, ubuf, ro));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, ro, 2, 0, 4096, 0));
	/* the target was opened read-only: no writes, as write(2) says */
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, true, ro, 2, 0, 4096, 0));
	close(ro);

	/* a user buffer slot used the dma-buf way: addr is no user address */
	{
		struct iovec iov = { .iov_len = MiB };

		ASSERT_EQ(0, posix_memalign(&iov.iov_base, 4096, MiB));
		ASSERT_EQ(1, io_uring_register_buffers_update_tag(&self->ring, 3,
								  &iov, NULL, 1));
		EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd,
						     3, 0, 4096, 0));
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 3));
		free(iov.iov_base);
	}

	close(ubuf);
	close(memfd);
}

/*
 * The transfers of the range and fixed-target tests: (length, queue depth,
 * count), from 4 KiB at QD 1 to one 8 MiB transfer, each plan packed from
 * offset 0 of the slot and from @disk_base on disk.
 */
static const struct { unsigned int len, qd, n; } slot_plan[] = {
	{ 4096, 1, 64 }, { 4096, 64, 256 }, { 65536, 16, 64 },
	{ 262144, 64, 32 }, { 1 << 20, 8, 8 }, { 8 << 20, 1, 1 },
};

/*
 * Each plan of slot_plan: WRITE_FIXED from slot @wslot (filled with the
 * pattern through @wmap, its range's CPU view) to the disk, READ_FIXED back
 * into slot @rslot, checked through @rmap (its range's CPU view) and @rdbuf
 * (for the CPU access bracket).  @fd is a descriptor, or an index into the
 * ring's files with IOSQE_FIXED_FILE in @sqe_flags.
 */
static void slot_round_trips(struct __test_metadata *_metadata,
			     struct io_uring *ring, int fd,
			     unsigned int sqe_flags, unsigned int wslot,
			     void *wmap, unsigned int rslot, const void *rmap,
			     int rdbuf, uint64_t disk_base)
{
	static struct fixed_io x[256];

	for (unsigned int p = 0; p < sizeof(slot_plan) / sizeof(slot_plan[0]); p++) {
		unsigned int len = slot_plan[p].len, n = slot_plan[p].n;
		uint64_t seed = 0x7000 + p;

		for (unsigned int i = 0; i < n; i++) {
			x[i].len = len;
			x[i].buf_off = (uint64_t)i * len;
			x[i].off = disk_base + (uint64_t)i * len;
			pattern_fill(wmap + x[i].buf_off, len, seed, x[i].off);
		}
		ASSERT_EQ(0, fixed_io_batch_flags(ring, true, fd, sqe_flags,
						  wslot, x, n, slot_plan[p].qd));
		ASSERT_EQ(0, fixed_io_batch_flags(ring, false, fd, sqe_flags,
						  rslot, x, n, slot_plan[p].qd));
		ASSERT_EQ(0, dmabufrw_cpu_begin(rdbuf, DMA_BUF_SYNC_READ));
		for (unsigned int i = 0; i < n; i++) {
			ASSERT_EQ(-1, pattern_check(rmap + x[i].buf_off, len, seed,
						    x[i].off))
				TH_LOG("%u bytes at QD %u: transfer %u", len,
				       slot_plan[p].qd, i);
		}
		ASSERT_EQ(0, dmabufrw_cpu_end(rdbuf, DMA_BUF_SYNC_READ));
	}
}

/* Is all of @buf zero? */
static int all_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

/*
 * A slot may hold a range of a dma-buf: sqe->addr is an offset in it, a
 * transfer that leaves it fails with EFAULT although the dma-buf goes on,
 * and the rest of the dma-buf is never touched.  Two ranges of one buffer
 * share its attachment.  Bad ranges fail with EINVAL and leave the slot as
 * it was.
 */
TEST_F(dmabuf_rw, range_slots_address_only_their_range)
{
	const size_t size = 16 * MiB, roff = 4 * MiB, hoff = 8 * MiB,
		     rlen = 8 * MiB;
	struct buf_pair p;
	unsigned long ino;
	long refs;
	int attached;

	pair_setup(_metadata, &p, &self->ring, self->fd, size);
	/* slot 2: the udmabuf's [4, 12) MiB, slot 3: the heap's [8, 16) MiB */
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 2, p.ubuf,
						    self->fd, roff, rlen, 0));
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 3, p.heap,
						    self->fd, hoff, rlen, 0));
	ino = file_ino(p.heap);
	ASSERT_EQ(0, bufinfo(ino, &refs, &attached));
	EXPECT_EQ(1, attached) TH_LOG("a range attached on its own");

	slot_round_trips(_metadata, &self->ring, self->fd, 0, 2, p.umap + roff,
			 3, p.hmap + hoff, p.heap, 256 * MiB);
	/* the heap's first half was never the slot's: still as allocated */
	ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
	EXPECT_TRUE(all_zero(p.hmap, hoff));
	ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));

	/* within the range only, though the dma-buf goes on */
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 2,
					     rlen - 4096, 8192, 0));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 2,
					     rlen, 4096, 0));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 2,
					  rlen - 4096, 4096, 0));
	/* the device's alignment applies to the offset in the dma-buf */
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
						    self->fd, 101, 4096, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, self->fd, 4,
					     0, 4096, 0));
	/* the range's end at the buffer's end is fine, one byte more is not */
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
						    self->fd, size - 4096, 4096, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
							  self->fd, size - 4096,
							  4097, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
							  self->fd, size, 4096, 0));
	/* an offset without a length */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
							  self->fd, 4096, 0, 0));
	/* offset + length wraps */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
							  self->fd, ~0ULL - 4095,
							  8192, 0));
	/* an unknown flag */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf,
							  self->fd, 0, 0, 1U << 31));
	/* each refusal left slot 4 with its last range: 4 KiB at the end */
	pattern_fill(p.umap + size - 4096, 4096, 0x7100, 300 * MiB);
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, true, self->fd, 4, 0,
					  4096, 300 * MiB));
	EXPECT_EQ(-1, pattern_check_fd(self->fd, 300 * MiB, 4096, 0x7100,
				       300 * MiB));

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 4));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 3));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 2));
	pair_teardown(&p, &self->ring);
}

/*
 * The target may be given as an index into the ring's registered files
 * (IORING_REGBUF_F_FIXED_TARGET): the registration holds the file itself,
 * so emptying or replacing that slot of the file table changes nothing.
 * Data moves both ways with I/O on the fixed file and on a descriptor of
 * it; an index that is empty, beyond the table or negative, or a ring with
 * no file table, fails with EBADF, a fixed file that holds another device
 * fails its I/O with EBADF, and the flag on a user buffer with EINVAL.
 * Beside another VM (TEST_LANES=2) it took 21 s of the harness's default
 * limit of 30.
 */
TEST_F_TIMEOUT(dmabuf_rw, fixed_file_target, 300)
{
	const size_t size = 8 * MiB;
	struct io_uring bare;
	struct buf_pair p;
	int other, plain, none = -1;

	pair_setup(_metadata, &p, &self->ring, self->fd, size);
	other = open(nvme_slow_path("/dev/%s"), O_RDWR | O_DIRECT);
	ASSERT_LE(0, other);
	plain = open(NVME_DEV, O_RDWR);
	ASSERT_LE(0, plain);
	ASSERT_EQ(0, io_uring_register_files_sparse(&self->ring, 8));
	ASSERT_EQ(1, io_uring_register_files_update(&self->ring, 1, &self->fd, 1));
	ASSERT_EQ(1, io_uring_register_files_update(&self->ring, 3, &other, 1));
	ASSERT_EQ(1, io_uring_register_files_update(&self->ring, 4, &plain, 1));

	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 2, p.ubuf, 1,
						    0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 3, p.heap, 1,
						    0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	/* the file table's slot goes: the registration still has the file */
	ASSERT_EQ(1, io_uring_register_files_update(&self->ring, 1, &none, 1));
	ASSERT_EQ(1, io_uring_register_files_update(&self->ring, 5, &self->fd, 1));
	slot_round_trips(_metadata, &self->ring, 5, IOSQE_FIXED_FILE, 2, p.umap,
			 3, p.hmap, p.heap, 320 * MiB);
	slot_round_trips(_metadata, &self->ring, self->fd, 0, 2, p.umap, 3,
			 p.hmap, p.heap, 336 * MiB);
	/* a fixed file of another device is not served */
	{
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
		struct io_uring_cqe *cqe;

		dmabufrw_prep_read_dmabuf(sqe, 3, 2, 0, 4096, 0);
		sqe->flags |= IOSQE_FIXED_FILE;
		ASSERT_EQ(1, io_uring_submit_and_wait(&self->ring, 1));
		ASSERT_EQ(0, io_uring_peek_cqe(&self->ring, &cqe));
		EXPECT_EQ(-EBADF, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}

	/* an empty slot, one beyond the table, a negative index */
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf, 1,
							 0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf, 8,
							 0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf, -1,
							 0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	/* the file in the slot is checked as a descriptor's would be */
	EXPECT_EQ(-EINVAL, dmabufrw_register_dmabuf_range(&self->ring, 4, p.ubuf, 4,
							  0, 0, DMABUFRW_REGBUF_F_FIXED_TARGET));
	/* a ring without a file table */
	ASSERT_EQ(0, io_uring_queue_init(4, &bare, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&bare, 1));
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf_range(&bare, 0, p.ubuf, 0, 0, 0,
							 DMABUFRW_REGBUF_F_FIXED_TARGET));
	io_uring_queue_exit(&bare);
	/* the flag is for dma-buf descriptors only */
	{
		struct dmabufrw_regbuf_desc d = {
			.type = DMABUFRW_REGBUF_USER,
			.flags = DMABUFRW_REGBUF_F_FIXED_TARGET,
			.addr = (uintptr_t)p.umap,
			.len = 4096,
		};
		struct io_uring r;

		ASSERT_EQ(0, io_uring_queue_init(4, &r, 0));
		EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&r, &d, 1));
		io_uring_queue_exit(&r);
	}
	/* nothing was registered in slot 4 */
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 4, 0,
					     4096, 0));

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 2));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 3));
	ASSERT_EQ(0, io_uring_unregister_files(&self->ring));
	close(plain);
	close(other);
	pair_teardown(&p, &self->ring);
}

/*
 * Random transfers (4 KiB to 1 MiB, at random offsets in the dma-buf and on
 * disk) at queue depths 1 to 128: write them from a udmabuf, read them back
 * into a system-heap buffer, check every byte through the CPU view.
 * Under TCG this comes close to the harness's default limit of 30 s, and
 * beside another VM (TEST_LANES=2) it ran out.
 */
TEST_F_TIMEOUT(dmabuf_rw, random_offsets_and_queue_depths, 300)
{
	const unsigned int qds[] = { 1, 8, 32, 128 }, n = 48;
	struct fixed_io d[48];
	struct buf_pair p;

	pair_setup(_metadata, &p, &self->ring, self->fd, 32 * MiB);

	srandom(1234);
	for (unsigned int q = 0; q < sizeof(qds) / sizeof(qds[0]); q++) {
		uint64_t seed = 0x5000 + q;

		/* Non-overlapping slots of 1 MiB in the buffers and on disk. */
		for (unsigned int i = 0; i < n; i++) {
			unsigned int pages = 1 + random() % 256;

			d[i].len = pages * 4096;
			d[i].buf_off = (uint64_t)(i % 32) * MiB +
				(random() % (257 - pages)) * 4096 % MiB;
			if (d[i].buf_off + d[i].len > (uint64_t)(i % 32 + 1) * MiB)
				d[i].buf_off = (uint64_t)(i % 32) * MiB;
			d[i].off = (uint64_t)(64 + 2 * i) * MiB +
				(random() % 64) * 4096;
		}
		/* Slots repeat every 32 transfers: do them in two halves. */
		for (unsigned int h = 0; h < n; h += 24) {
			unsigned int m = n - h < 24 ? n - h : 24;

			for (unsigned int i = h; i < h + m; i++)
				pattern_fill(p.umap + d[i].buf_off, d[i].len, seed,
					     d[i].off);
			ASSERT_EQ(0, fixed_io_batch(&self->ring, true, self->fd, 0,
					      d + h, m, qds[q]));
			ASSERT_EQ(0, fixed_io_batch(&self->ring, false, self->fd, 1,
					      d + h, m, qds[q]));
			ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
			for (unsigned int i = h; i < h + m; i++) {
				ASSERT_EQ(-1, pattern_check(p.hmap + d[i].buf_off,
							    d[i].len, seed,
							    d[i].off))
					TH_LOG("qd %u transfer %u: %u bytes at buffer offset %llu",
					       qds[q], i, d[i].len,
					       (unsigned long long)d[i].buf_off);
			}
			ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));
		}
	}
	pair_teardown(&p, &self->ring);
}

/*
 * Transfers far larger than max_hw_sectors, from a system-heap buffer whose
 * pages are scattered (more DMA segments than max_segments without an
 * IOMMU), are split by the block layer and still land intact.
 */
TEST_F(dmabuf_rw, large_transfers_are_split)
{
	const size_t size = 16 * MiB, len = 8 * MiB;
	const uint64_t disk_off = 200 * MiB, seed = 0x1a7e;
	int memfd, ubuf, heap;
	void *umap, *hmap;

	heap = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, heap);
	ubuf = dmabufrw_alloc_udmabuf(size, &memfd);
	ASSERT_LE(0, ubuf);
	hmap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, heap, 0);
	ASSERT_NE(MAP_FAILED, hmap);
	umap = mmap(NULL, size, PROT_READ, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, umap);

	ASSERT_EQ(0, dmabufrw_cpu_begin(heap, DMA_BUF_SYNC_WRITE));
	pattern_fill(hmap + 4096, len, seed, disk_off);
	ASSERT_EQ(0, dmabufrw_cpu_end(heap, DMA_BUF_SYNC_WRITE));

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, heap, self->fd));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 1, ubuf, self->fd));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 4096, len,
					      disk_off));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, self->fd, 1, 3 * MiB,
					      len, disk_off));
	EXPECT_EQ(-1, pattern_check(umap + 3 * MiB, len, seed, disk_off));

	munmap(umap, size);
	munmap(hmap, size);
	close(ubuf);
	close(heap);
	close(memfd);
}

/*
 * Four 2 MiB writes in flight at once, then four reads, with the device
 * taking 4 KiB per command: 2048 commands, more than the device has
 * requests for (1023 on the rig), so that nonblocking issues find the queue full after
 * other parts of the same I/O went out, and such an I/O is issued again
 * whole from io-wq.  Every I/O completes in full and the data read back
 * are the data written.
 */
TEST_F_TIMEOUT(dmabuf_rw, large_transfers_with_the_queue_full_move_the_right_data, 300)
{
	const unsigned int n = 4;
	const size_t len = 2 * MiB, size = n * len;
	const uint64_t seed = 0xf011;
	char path[300], old_kb[32];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	unsigned int i, pass;
	double t;
	void *map;
	int heap;

	snprintf(path, sizeof(path), "/sys/block/%s/queue/nr_requests",
		 nvme_path("%s"));
	ASSERT_LT(0, read_text(path, old_kb, sizeof(old_kb)));
	ASSERT_LT(strtol(old_kb, NULL, 10), size / 4096)
		TH_LOG("the queue takes %s requests", old_kb);
	snprintf(path, sizeof(path), "/sys/block/%s/queue/max_sectors_kb",
		 nvme_path("%s"));
	ASSERT_LT(0, read_text(path, old_kb, sizeof(old_kb)));
	heap = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, heap);
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, heap, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, dmabufrw_cpu_begin(heap, DMA_BUF_SYNC_WRITE));
	pattern_fill(map, size, seed, 0);
	ASSERT_EQ(0, dmabufrw_cpu_end(heap, DMA_BUF_SYNC_WRITE));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, heap, self->fd));
	ASSERT_EQ(0, write_text(path, "4"));

	for (pass = 0; pass < 2; pass++) {
		if (pass) {
			EXPECT_EQ(0, dmabufrw_cpu_begin(heap, DMA_BUF_SYNC_WRITE));
			memset(map, 0, size);
			EXPECT_EQ(0, dmabufrw_cpu_end(heap, DMA_BUF_SYNC_WRITE));
		}
		for (i = 0; i < n; i++) {
			sqe = io_uring_get_sqe(&self->ring);
			if (pass)
				io_uring_prep_read_fixed(sqe, self->fd,
							 (void *)(uintptr_t)(i * len),
							 len, i * len, 0);
			else
				io_uring_prep_write_fixed(sqe, self->fd,
							  (void *)(uintptr_t)(i * len),
							  len, i * len, 0);
			sqe->user_data = i;
		}
		t = now_sec();
		EXPECT_EQ((int)n, io_uring_submit(&self->ring));
		for (i = 0; i < n; i++) {
			if (io_uring_wait_cqe(&self->ring, &cqe))
				break;
			EXPECT_EQ((int)len, cqe->res)
				TH_LOG("%s %llu: %d", pass ? "read" : "write",
				       (unsigned long long)cqe->user_data, cqe->res);
			io_uring_cqe_seen(&self->ring, cqe);
		}
		EXPECT_EQ(n, i);
		TH_LOG("%u %s of %zu KiB in 4 KiB commands: %.1f s, %d io-wq workers",
		       n, pass ? "reads" : "writes", len >> 10,
		       now_sec() - t, iowq_workers(0));
	}
	EXPECT_EQ(0, write_text(path, old_kb));
	ASSERT_EQ(0, dmabufrw_cpu_begin(heap, DMA_BUF_SYNC_READ));
	EXPECT_EQ(-1, pattern_check(map, size, seed, 0));
	ASSERT_EQ(0, dmabufrw_cpu_end(heap, DMA_BUF_SYNC_READ));

	dmabufrw_unregister_slot(&self->ring, 0);
	munmap(map, size);
	close(heap);
}

/*
 * dma-buf I/O and ordinary fixed-buffer I/O on the same ring and device,
 * interleaved: neither disturbs the other (no merging across the two).
 */
TEST_F(dmabuf_rw, mixed_with_ordinary_fixed_buffers)
{
	const unsigned int n = 64, bs = 16384;
	struct io_uring_cqe *cqe;
	struct iovec iov;
	void *ubuf_map, *plain;
	int memfd, ubuf, i;

	ubuf = dmabufrw_alloc_udmabuf(n * bs, &memfd);
	ASSERT_LE(0, ubuf);
	ubuf_map = mmap(NULL, n * bs, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, ubuf_map);
	ASSERT_EQ(0, posix_memalign(&plain, 4096, n * bs));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, self->fd));
	/* slot 1: user memory, through the same descriptor interface */
	iov = (struct iovec){ plain, n * bs };
	ASSERT_EQ(1, io_uring_register_buffers_update_tag(&self->ring, 1, &iov,
							   NULL, 1));

	/* Even chunks from the dma-buf, odd ones from user memory, adjacent
	 * on disk so that the block layer would merge them if it could. */
	for (i = 0; i < (int)n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
		uint64_t disk = 300 * MiB + (uint64_t)i * bs;

		if (i % 2) {
			pattern_fill(plain + i * bs, bs, 77, disk);
			io_uring_prep_write_fixed(sqe, self->fd, plain + i * bs,
						  bs, disk, 1);
		} else {
			pattern_fill(ubuf_map + i * bs, bs, 77, disk);
			io_uring_prep_write_fixed(sqe, self->fd,
						  (void *)(uintptr_t)(i * bs),
						  bs, disk, 0);
		}
	}
	ASSERT_EQ((int)n, io_uring_submit_and_wait(&self->ring, n));
	for (i = 0; i < (int)n; i++) {
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_EQ((int)bs, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}
	/* Read everything back with one plain read and check it. */
	memset(plain, 0, n * bs);
	ASSERT_EQ((ssize_t)(n * bs), pread(self->fd, plain, n * bs, 300 * MiB));
	EXPECT_EQ(-1, pattern_check(plain, n * bs, 77, 300 * MiB));

	free(plain);
	munmap(ubuf_map, n * bs);
	close(ubuf);
	close(memfd);
}

/*
 * The registration holds what it needs: closing the dma-buf and the target
 * right after registering leaves I/O working until the slot is emptied.
 */
TEST_F(dmabuf_rw, fds_closed_after_registration)
{
	int memfd, ubuf, target;
	void *map;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	target = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, target);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, target));
	ASSERT_EQ(0, io_uring_register_files(&self->ring, &target, 1));
	close(ubuf);
	close(target);

	map = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, map);
	pattern_fill(map, MiB, 9, 400 * MiB);
	/* The fixed file is the registered target: the same struct file. */
	{
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
		struct io_uring_cqe *cqe;

		io_uring_prep_write_fixed(sqe, 0, NULL, MiB, 400 * MiB, 0);
		sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_submit(&self->ring);
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_EQ((int)MiB, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	munmap(map, MiB);
	close(memfd);
}

/*
 * Emptying the slot while I/O is in flight: a request looks its buffer up
 * when it is first issued (within io_uring_enter() for this ring) and keeps
 * the registration from then on, so every read submitted before completes;
 * the registration goes away after them, and later I/O on the slot fails.
 */
TEST_F(dmabuf_rw, unregister_with_io_in_flight)
{
	const unsigned int n = 64;
	struct io_uring_cqe *cqe;
	int memfd, ubuf, i, ok = 0;

	ubuf = dmabufrw_alloc_udmabuf(4 * MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, self->fd));
	for (i = 0; i < (int)n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

		io_uring_prep_read_fixed(sqe, self->fd,
					 (void *)(uintptr_t)((i % 64) * 65536),
					 65536, (uint64_t)i * 65536, 0);
	}
	ASSERT_EQ((int)n, io_uring_submit(&self->ring));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	for (i = 0; i < (int)n; i++) {
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_EQ(65536, cqe->res);
		ok += cqe->res == 65536;
		io_uring_cqe_seen(&self->ring, cqe);
	}
	EXPECT_EQ((int)n, ok);
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096, 0));
	close(ubuf);
	close(memfd);
}

/*
 * Tearing the ring down with dma-buf I/O in flight leaks nothing: the
 * registration lets go of the buffer (its attachment and the reference of
 * its file) once the I/O is done.
 */
TEST(ring_exit_with_io_in_flight)
{
	REQUIRE_DMABUF_IO();
	struct io_uring ring;
	int fd, memfd, ubuf, i, attached;
	unsigned long ino;
	long refs;

	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, io_uring_queue_init(128, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	ubuf = dmabufrw_alloc_udmabuf(8 * MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, ubuf, fd));
	ino = file_ino(ubuf);
	ASSERT_EQ(0, bufinfo(ino, &refs, &attached));
	EXPECT_EQ(1, attached);
	EXPECT_EQ(2, refs);	/* the fd and the registration */
	for (i = 0; i < 128; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		io_uring_prep_read_fixed(sqe, fd, (void *)(uintptr_t)(i * 65536),
					 65536, (uint64_t)i * 65536, 0);
	}
	ASSERT_EQ(128, io_uring_submit(&ring));
	io_uring_queue_exit(&ring);
	EXPECT_EQ(0, wait_bufinfo(ino, 0, 1));	/* the fd alone */
	close(ubuf);
	close(fd);
	close(memfd);
}

/*
 * A child forked with a registered ring and its files exits; the parent's
 * I/O goes on, the registration the parent's ring holds is untouched by the
 * child's exit, and emptying the slot lets go of the buffer.
 */
TEST_F(dmabuf_rw, fork_with_registered_ring)
{
	int memfd, ubuf, status, attached;
	unsigned long ino;
	long refs;
	pid_t pid;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, self->fd));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096, 0));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		close(ubuf);
		close(self->fd);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 4096, 4096, 0));
	ino = file_ino(ubuf);
	ASSERT_EQ(0, bufinfo(ino, &refs, &attached));
	EXPECT_EQ(1, attached);
	EXPECT_EQ(2, refs);	/* the parent's fd and the registration */
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	EXPECT_EQ(0, wait_bufinfo(ino, 0, 1));	/* the parent's fd alone */
	close(ubuf);
	close(memfd);
}

/* Offset of the first nonzero byte of @p, or -1. */
static long first_nonzero(const void *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (((const unsigned char *)p)[i])
			return (long)i;
	return -1;
}

/* DMA_HEAP_IOCTL_ALLOC with the dma-buf's access mode in fd_flags */
static int heap_alloc_mode(size_t size, int mode)
{
	struct {
		uint64_t len;
		uint32_t fd, fd_flags;
		uint64_t heap_flags;
	} data = { .len = size, .fd_flags = mode | O_CLOEXEC };
	int heap = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC), ret;

	if (heap < 0)
		return -errno;
	/* DMA_HEAP_IOCTL_ALLOC */
	ret = ioctl(heap, _IOWR('H', 0x0, typeof(data)), &data);
	close(heap);
	return ret < 0 ? -errno : (int)data.fd;
}

/*
 * The dma-buf's own access mode limits what the device may do with it, as
 * memory protection limits read(2) and write(2): READ_FIXED (the device
 * writes the buffer) needs it open for writing and fails with EFAULT
 * otherwise, leaving the buffer as it was; WRITE_FIXED (the device reads
 * it) needs it open for reading.  A registration that would allow neither
 * direction is refused with EACCES.
 */
TEST_F(dmabuf_rw, dmabuf_open_mode_limits_the_device_access)
{
	const uint64_t disk_off = 500 * MiB;
	int rdonly, wronly, ro_target;
	void *pbuf, *map;

	rdonly = heap_alloc_mode(MiB, O_RDONLY);
	ASSERT_LE(0, rdonly);
	wronly = heap_alloc_mode(MiB, O_WRONLY);
	ASSERT_LE(0, wronly);
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, MiB));
	pattern_fill(pbuf, MiB, 0x0dd, disk_off);
	ASSERT_EQ((ssize_t)MiB, pwrite(self->fd, pbuf, MiB, disk_off));

	/* read-only buffer: the device may read it, not write it */
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, rdonly, self->fd));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					     0, MiB, disk_off));
	map = mmap(NULL, MiB, PROT_READ, MAP_SHARED, rdonly, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, dmabufrw_cpu_begin(rdonly, DMA_BUF_SYNC_READ));
	EXPECT_EQ(-1, first_nonzero(map, MiB));
	ASSERT_EQ(0, dmabufrw_cpu_end(rdonly, DMA_BUF_SYNC_READ));
	munmap(map, MiB);
	/* the device reads it: its zeroes land on the disk */
	EXPECT_EQ((int)MiB, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0,
					      0, MiB, disk_off));
	ASSERT_EQ((ssize_t)MiB, pread(self->fd, pbuf, MiB, disk_off));
	EXPECT_EQ(-1, first_nonzero(pbuf, MiB));

	/* write-only buffer: the device may write it, not read it */
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 1, wronly, self->fd));
	EXPECT_EQ((int)MiB, dmabufrw_rw_fixed(&self->ring, false, self->fd, 1,
					      0, MiB, disk_off));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, true, self->fd, 1,
					     0, MiB, disk_off));

	/* a read-only buffer for a read-only target: nothing to allow */
	ro_target = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ro_target);
	EXPECT_EQ(-EACCES, dmabufrw_register_dmabuf(&self->ring, 2, rdonly,
						    ro_target));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, ro_target, 2,
					     0, 4096, 0));
	close(ro_target);

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 1));
	free(pbuf);
	close(rdonly);
	close(wronly);
}

/* Submit one vectored dma-buf I/O of @nr ranges @iov; its result. */
static int vec_io_one(struct io_uring *ring, int write, int fd,
		      unsigned int idx, const struct iovec *iov,
		      unsigned int nr, uint64_t off)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int ret;

	if (write)
		dmabufrw_prep_writev_dmabuf(sqe, fd, idx, iov, nr, off);
	else
		dmabufrw_prep_readv_dmabuf(sqe, fd, idx, iov, nr, off);
	ret = io_uring_submit_and_wait(ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_peek_cqe(ring, &cqe);
	if (ret)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret;
}

/*
 * One READ_FIXED or WRITE_FIXED moves at most MAX_RW_COUNT bytes, as with
 * user buffers: a longer one is refused with EFAULT rather than reporting
 * more than an int holds.  A vectored one too, however small its ranges:
 * two ranges, apart so that they do not merge, adding up to a block more
 * fail with EINVAL.  A buffer of the test exporter whose pages repeat
 * makes a dma-buf larger than that; the target is write-only, so that the
 * device only reads it.  The longest of each is taken (the device's end
 * cuts it to 1 MiB).
 */
#define MAX_RW_COUNT	(INT_MAX & ~4095U)
TEST(transfers_over_max_rw_count_are_refused)
{
	REQUIRE_DMABUF_IO();
	struct io_uring ring;
	struct iovec iov[2];
	uint64_t disk_size;
	int ctl, dbuf, fd;

	ctl = texp_open();
	if (ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, ctl);
	dbuf = texp_create(ctl, 3ULL << 30, DMABUF_TEST_F_REPEAT);
	ASSERT_LE(0, dbuf);
	fd = open(NVME_DEV, O_WRONLY | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioctl(fd, BLKGETSIZE64, &disk_size));
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, dbuf, fd));

	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&ring, true, fd, 0, 0,
					     MAX_RW_COUNT + 4096, 0));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&ring, true, fd, 0, 4096,
					     UINT_MAX & ~4095, 0));
	/* the longest one is taken; the device's end cuts it to 1 MiB */
	EXPECT_EQ((int)MiB, dmabufrw_rw_fixed(&ring, true, fd, 0, 1ULL << 30,
					      MAX_RW_COUNT, disk_size - MiB));

	ASSERT_EQ(0, dmabufrw_dmabuf_iovec(&iov[0], 0, 1ULL << 30));
	ASSERT_EQ(0, dmabufrw_dmabuf_iovec(&iov[1], 2ULL << 30,
					   MAX_RW_COUNT - (1U << 30) + 4096));
	EXPECT_EQ(-EINVAL, vec_io_one(&ring, 1, fd, 0, iov, 2, 0));
	iov[1].iov_len -= 4096;
	EXPECT_EQ((int)MiB, vec_io_one(&ring, 1, fd, 0, iov, 2,
				       disk_size - MiB));

	io_uring_queue_exit(&ring);
	close(fd);
	close(dbuf);
	close(ctl);
}

/*
 * The ways users set up and drive a ring: each must move dma-buf data the
 * same.  @setup goes to io_uring_queue_init_params(), @sqe_flags on every
 * request; @link chains each write to the read of the same range;
 * @close_ring_fd registers the ring fd and closes the ring's own.
 */
FIXTURE(ring_mode) {
	struct io_uring ring;
	struct buf_pair p;
	int fd;
};

FIXTURE_VARIANT(ring_mode) {
	unsigned int setup;
	unsigned int sqe_flags;
	bool link;
	bool close_ring_fd;
};

FIXTURE_VARIANT_ADD(ring_mode, plain) {
};

FIXTURE_VARIANT_ADD(ring_mode, sqpoll) {
	.setup = IORING_SETUP_SQPOLL,
};

FIXTURE_VARIANT_ADD(ring_mode, coop_taskrun) {
	.setup = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
};

FIXTURE_VARIANT_ADD(ring_mode, defer_taskrun) {
	.setup = IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
};

FIXTURE_VARIANT_ADD(ring_mode, registered_ring_fd_closed) {
	.close_ring_fd = true,
};

FIXTURE_VARIANT_ADD(ring_mode, iosqe_async) {
	.sqe_flags = IOSQE_ASYNC,
};

FIXTURE_VARIANT_ADD(ring_mode, linked) {
	.link = true,
};

FIXTURE_VARIANT_ADD(ring_mode, iopoll) {
	.setup = IORING_SETUP_IOPOLL,
};

FIXTURE_VARIANT_ADD(ring_mode, sqpoll_iopoll) {
	.setup = IORING_SETUP_SQPOLL | IORING_SETUP_IOPOLL,
};

FIXTURE_SETUP(ring_mode)
{
	struct io_uring_params params = { .flags = variant->setup };
	struct dmabufrw_regbuf_desc empty[2] = {};

	REQUIRE_DMABUF_IO();
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	params.sq_thread_idle = 1000;
	ASSERT_EQ(0, io_uring_queue_init_params(64, &self->ring, &params));
	if (variant->close_ring_fd) {
		ASSERT_EQ(1, io_uring_register_ring_fd(&self->ring));
		ASSERT_EQ(0, close(self->ring.ring_fd));
		self->ring.ring_fd = -1;
	}
	/* through the registered ring fd when the ring's own is closed */
	ASSERT_EQ(0, dmabufrw_register_buffers_desc(&self->ring, empty, 2));
}

FIXTURE_TEARDOWN(ring_mode)
{
	io_uring_queue_exit(&self->ring);
	close(self->fd);
}

/* A transfer of the ring-mode tests, which mix directions in one batch. */
struct io_desc {
	uint64_t buf_off;
	uint64_t disk_off;
	unsigned int len;
	bool read;
};

/* Queue @n fixed I/Os of @d at queue depth @qd and reap them all. */
static void ring_mode_batch(struct __test_metadata *_metadata,
			    struct io_uring *ring, int fd, const struct io_desc *d,
			    unsigned int n, unsigned int qd,
			    const FIXTURE_VARIANT(ring_mode) *variant)
{
	unsigned int sub = 0, done = 0, inflight = 0, per = variant->link ? 2 : 1;
	struct io_uring_cqe *cqe;

	while (done < n * per) {
		while (sub < n && inflight + per <= qd) {
			struct io_uring_sqe *w = NULL, *r;

			if (variant->link || !d[sub].read) {
				w = io_uring_get_sqe(ring);
				io_uring_prep_write_fixed(w, fd,
					(void *)(uintptr_t)d[sub].buf_off,
					d[sub].len, d[sub].disk_off, 0);
				w->flags |= variant->sqe_flags;
				w->user_data = sub << 1;
			}
			if (variant->link || d[sub].read) {
				r = io_uring_get_sqe(ring);
				io_uring_prep_read_fixed(r, fd,
					(void *)(uintptr_t)d[sub].buf_off,
					d[sub].len, d[sub].disk_off, 1);
				r->flags |= variant->sqe_flags;
				r->user_data = sub << 1 | 1;
				if (w)
					w->flags |= IOSQE_IO_LINK;
			}
			sub++;
			inflight += per;
		}
		ASSERT_LE(0, io_uring_submit_and_wait(ring, 1));
		while (io_uring_peek_cqe(ring, &cqe) == 0) {
			unsigned int i = cqe->user_data >> 1;

			EXPECT_EQ((int)d[i].len, cqe->res)
				TH_LOG("%s of cell %u", cqe->user_data & 1 ?
				       "read" : "write", i);
			io_uring_cqe_seen(ring, cqe);
			inflight--;
			done++;
		}
	}
}

/*
 * 64 random transfers (4 KiB to 256 KiB) at queue depth 16: written from a
 * udmabuf, read back into a system-heap buffer (each write linked to its
 * read, or all writes then all reads), checked through the heap buffer's
 * CPU view and a pread of the disk.
 */
TEST_F(ring_mode, round_trip_at_random_offsets)
{
	const unsigned int n = 64, qd = 16, cell = 256 * 1024;
	const size_t size = n * cell;
	struct io_desc d[64];
	unsigned int seed = 77;
	void *pbuf;

	self->p.size = size;
	self->p.ubuf = dmabufrw_alloc_udmabuf(size, &self->p.memfd);
	ASSERT_LE(0, self->p.ubuf);
	self->p.heap = dmabufrw_alloc_heap("system", size);
	ASSERT_LE(0, self->p.heap);
	self->p.umap = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
			    self->p.memfd, 0);
	ASSERT_NE(MAP_FAILED, self->p.umap);
	self->p.hmap = mmap(NULL, size, PROT_READ, MAP_SHARED, self->p.heap, 0);
	ASSERT_NE(MAP_FAILED, self->p.hmap);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->p.ubuf,
					      self->fd));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 1, self->p.heap,
					      self->fd));

	/* disjoint cells on disk and in the buffers, random lengths */
	for (unsigned int i = 0; i < n; i++) {
		d[i].buf_off = i * cell;
		d[i].disk_off = 700 * MiB + i * cell;
		d[i].len = (1 + rand_r(&seed) % 64) * 4096;
		d[i].read = false;
		pattern_fill(self->p.umap + d[i].buf_off, d[i].len, 0x77 + i,
			     d[i].disk_off);
	}
	ring_mode_batch(_metadata, &self->ring, self->fd, d, n, qd, variant);
	if (!variant->link) {
		for (unsigned int i = 0; i < n; i++)
			d[i].read = true;
		ring_mode_batch(_metadata, &self->ring, self->fd, d, n, qd,
				variant);
	}

	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, cell));
	ASSERT_EQ(0, dmabufrw_cpu_begin(self->p.heap, DMA_BUF_SYNC_READ));
	for (unsigned int i = 0; i < n; i++) {
		EXPECT_EQ(-1, pattern_check(self->p.hmap + d[i].buf_off,
					    d[i].len, 0x77 + i, d[i].disk_off))
			TH_LOG("cell %u in the heap buffer", i);
	}
	ASSERT_EQ(0, dmabufrw_cpu_end(self->p.heap, DMA_BUF_SYNC_READ));
	for (unsigned int i = 0; i < n; i++) {
		ASSERT_EQ((ssize_t)d[i].len, pread(self->fd, pbuf, d[i].len,
						   d[i].disk_off));
		EXPECT_EQ(-1, pattern_check(pbuf, d[i].len, 0x77 + i,
					    d[i].disk_off))
			TH_LOG("cell %u on disk", i);
	}
	free(pbuf);
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 1));
	munmap(self->p.hmap, size);
	munmap(self->p.umap, size);
	close(self->p.heap);
	close(self->p.ubuf);
	close(self->p.memfd);
}

/*
 * READV_FIXED/WRITEV_FIXED with dma-buf slots (vec_io_batch(): each
 * transfer as rotated pieces, two ranges out of order once merged): the
 * plan of slot_plan, 4 KiB at QD 1 to 8 MiB, written from a udmabuf and
 * read back into a system-heap buffer, on an interrupt-driven ring and on
 * an IOPOLL ring; checked through the heap buffer's CPU view and through a
 * pread of the disk, which must hold each transfer's pieces in file order.
 */
TEST_F(dmabuf_rw, vectored_round_trips_at_every_depth_and_size)
{
	static struct fixed_io x[256];
	const size_t size = 16 * MiB;
	void *pbuf;

	REQUIRE_POLL_QUEUES();
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, size));
	for (int polled = 0; polled < 2; polled++) {
		struct io_uring ring;
		struct buf_pair p;

		ASSERT_EQ(0, io_uring_queue_init(64, &ring,
				polled ? IORING_SETUP_IOPOLL : 0));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
		pair_setup(_metadata, &p, &ring, self->fd, size);

		for (unsigned int r = 0; r < sizeof(slot_plan) / sizeof(slot_plan[0]); r++) {
			unsigned int len = slot_plan[r].len, n = slot_plan[r].n;
			uint64_t seed = 0x5e00 + polled * 16 + r;
			uint64_t disk = 900 * MiB + (uint64_t)r * size;

			for (unsigned int i = 0; i < n; i++) {
				x[i].len = len;
				x[i].buf_off = (uint64_t)i * len;
				x[i].off = disk + (uint64_t)i * len;
				vec_pattern_fill(p.umap, &x[i], seed);
			}
			ASSERT_EQ(0, vec_io_batch(&ring, 1, self->fd, 0, x, n,
						  slot_plan[r].qd))
				TH_LOG("%s writev of %u x %u", polled ?
				       "polled" : "", n, len);
			ASSERT_EQ(0, vec_io_batch(&ring, 0, self->fd, 1, x, n,
						  slot_plan[r].qd))
				TH_LOG("%s readv of %u x %u", polled ?
				       "polled" : "", n, len);

			ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
			for (unsigned int i = 0; i < n; i++) {
				EXPECT_EQ(-1, vec_pattern_check(p.hmap, &x[i], seed))
					TH_LOG("%u bytes at QD %u: transfer %u in the heap buffer",
					       len, slot_plan[r].qd, i);
			}
			ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));
			ASSERT_EQ((ssize_t)n * len,
				  pread(self->fd, pbuf, (size_t)n * len, disk));
			EXPECT_EQ(-1, pattern_check(pbuf, (size_t)n * len, seed, disk))
				TH_LOG("%u bytes at QD %u: the disk", len,
				       slot_plan[r].qd);
		}
		pair_teardown(&p, &ring);
		io_uring_queue_exit(&ring);
	}
	free(pbuf);
}

/*
 * The refusals of vectored I/O to dma-buf slots, each with its errno, and
 * none moves anything: a refused write leaves the disk as it was, although
 * the first of its ranges was good.  A range leaving the slot (or its
 * sub-range), of length 0, or an empty slot: EFAULT; a range misaligned for
 * the device: EINVAL; a file the registration does not serve: EBADF; a
 * read into a dma-buf opened read-only: EFAULT.
 */
TEST_F(dmabuf_rw, vectored_refusals_change_nothing)
{
	const size_t size = 4 * MiB;
	const uint64_t disk = 1000 * MiB;
	struct iovec iov[3];
	struct buf_pair p;
	int memfd, ro;
	void *pbuf;

	pair_setup(_metadata, &p, &self->ring, self->fd, size);
	/* slot 2: the second MiB of the udmabuf */
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 2, p.ubuf,
						    self->fd, MiB, MiB, 0));
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, 64 * 1024));
	ASSERT_EQ(0, pattern_fill_fd(self->fd, disk, 64 * 1024, 0xd15c, disk));
	memset(p.umap, 0xa5, size);

	/* the second range leaves the slot */
	dmabufrw_dmabuf_iovec(&iov[0], 0, 4096);
	dmabufrw_dmabuf_iovec(&iov[1], size - 4096, 8192);
	EXPECT_EQ(-EFAULT, vec_io_one(&self->ring, 1, self->fd, 0, iov, 2, disk));
	/* ... or the slot's sub-range, though not the dma-buf */
	dmabufrw_dmabuf_iovec(&iov[1], MiB - 4096, 8192);
	EXPECT_EQ(-EFAULT, vec_io_one(&self->ring, 1, self->fd, 2, iov, 2, disk));
	/* a range of length 0 */
	dmabufrw_dmabuf_iovec(&iov[1], 8192, 0);
	dmabufrw_dmabuf_iovec(&iov[2], 16384, 4096);
	EXPECT_EQ(-EFAULT, vec_io_one(&self->ring, 1, self->fd, 0, iov, 3, disk));
	/* an empty slot */
	dmabufrw_dmabuf_iovec(&iov[1], 8192, 4096);
	EXPECT_EQ(-EFAULT, vec_io_one(&self->ring, 1, self->fd, 5, iov, 2, disk));
	/* the second range's offset misaligned for the device's DMA */
	dmabufrw_dmabuf_iovec(&iov[1], 8192 + 2, 4096);
	EXPECT_EQ(-EINVAL, vec_io_one(&self->ring, 1, self->fd, 0, iov, 2, disk));
	/* lengths that are not whole blocks, adding up to whole blocks */
	dmabufrw_dmabuf_iovec(&iov[0], 0, 4096 + 256);
	dmabufrw_dmabuf_iovec(&iov[1], 65536, 4096 - 256);
	EXPECT_EQ(-EINVAL, vec_io_one(&self->ring, 1, self->fd, 0, iov, 2, disk));
	/* a file the registration does not serve */
	memfd = memfd_create("not-the-disk", 0);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, ftruncate(memfd, MiB));
	dmabufrw_dmabuf_iovec(&iov[0], 0, 4096);
	dmabufrw_dmabuf_iovec(&iov[1], 65536, 4096);
	EXPECT_EQ(-EBADF, vec_io_one(&self->ring, 1, memfd, 0, iov, 2, 0));
	close(memfd);

	ASSERT_EQ(64 * 1024, pread(self->fd, pbuf, 64 * 1024, disk));
	EXPECT_EQ(-1, pattern_check(pbuf, 64 * 1024, 0xd15c, disk))
		TH_LOG("a refused vectored write changed the disk");

	/* the device may not write a dma-buf opened read-only */
	ro = heap_alloc_mode(size, O_RDONLY);
	ASSERT_LE(0, ro);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 3, ro, self->fd));
	EXPECT_EQ(-EFAULT, vec_io_one(&self->ring, 0, self->fd, 3, iov, 2, disk));
	/* the good I/O works */
	EXPECT_EQ(8192, vec_io_one(&self->ring, 1, self->fd, 3, iov, 2, disk));
	EXPECT_EQ(8192, vec_io_one(&self->ring, 0, self->fd, 0, iov, 2, disk));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 3));
	close(ro);

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 2));
	free(pbuf);
	pair_teardown(&p, &self->ring);
}

/*
 * IORING_SETUP_IOPOLL: WRITE_FIXED from a udmabuf and READ_FIXED back into
 * a system-heap buffer at queue depths 1 to 64 and sizes 4 KiB to 8 MiB,
 * checked through the heap buffer's CPU view and a pread of the disk.  The
 * small I/O goes to the poll queues: the controller's I/O queues raise
 * (almost) no interrupt for it, so the ring really polled.  Larger I/O is
 * split against the device's limits and completes by interrupt, as split
 * I/O of user memory does.
 */
TEST_F(dmabuf_rw, iopoll_ring_moves_data_at_every_depth_and_size)
{
	static const struct { unsigned int len, qd, n; } runs[] = {
		{ 4096, 1, 64 }, { 4096, 64, 256 }, { 65536, 16, 64 },
		{ 262144, 64, 64 }, { 1 * MiB, 8, 16 }, { 8 * MiB, 2, 2 },
	};
	const size_t size = 16 * MiB;
	struct io_uring ring;
	struct buf_pair p;
	void *pbuf;

	REQUIRE_POLL_QUEUES();
	ASSERT_EQ(0, io_uring_queue_init(64, &ring, IORING_SETUP_IOPOLL));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
	pair_setup(_metadata, &p, &ring, self->fd, size);
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, size));

	for (unsigned int r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
		const unsigned int len = runs[r].len, qd = runs[r].qd, n = runs[r].n;
		const uint64_t disk = 800 * MiB + r * size;
		long long irqs = nvme_io_interrupts();
		struct io_uring_cqe *cqe;

		ASSERT_LE(0, irqs);
		pattern_fill(p.umap, (size_t)n * len, 0x1b + r, disk);
		memset(pbuf, 0, (size_t)n * len);
		/* all writes, then all reads, each at queue depth qd */
		for (int pass = 0; pass < 2; pass++) {
			unsigned int sub = 0, done = 0;

			while (done < n) {
				while (sub < n && sub - done < qd) {
					struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
					uint64_t off = (uint64_t)sub * len;

					if (pass)
						io_uring_prep_read_fixed(sqe, self->fd,
							(void *)(uintptr_t)off, len,
							disk + off, 1);
					else
						io_uring_prep_write_fixed(sqe, self->fd,
							(void *)(uintptr_t)off, len,
							disk + off, 0);
					sqe->user_data = sub++;
				}
				ASSERT_LE(0, io_uring_submit_and_wait(&ring, 1));
				while (io_uring_peek_cqe(&ring, &cqe) == 0) {
					EXPECT_EQ((int)len, cqe->res)
						TH_LOG("%s %llu of %u x %u at QD %u",
						       pass ? "read" : "write",
						       cqe->user_data, n, len, qd);
					io_uring_cqe_seen(&ring, cqe);
					done++;
				}
			}
		}
		if (len == 4096) {
			irqs = nvme_io_interrupts() - irqs;
			printf("# polled: %u I/Os of 4 KiB at QD %u raised %lld interrupts\n",
			       2 * n, qd, irqs);
			EXPECT_GT(2 * n / 4, irqs);
		}

		ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
		EXPECT_EQ(-1, pattern_check(p.hmap, (size_t)n * len, 0x1b + r, disk))
			TH_LOG("%u x %u at QD %u: the heap buffer", n, len, qd);
		ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));
		ASSERT_EQ((ssize_t)n * len, pread(self->fd, pbuf, (size_t)n * len, disk));
		EXPECT_EQ(-1, pattern_check(pbuf, (size_t)n * len, 0x1b + r, disk))
			TH_LOG("%u x %u at QD %u: the disk", n, len, qd);
	}
	free(pbuf);
	pair_teardown(&p, &ring);
	io_uring_queue_exit(&ring);
}

/*
 * The requests in flight on the poll queues of the namespace @name, from
 * blk-mq's debugfs: how many, and how many of them are not polled (no
 * POLLED in their cmd_flags), into *@unpolled.  -1 without debugfs.
 */
static int poll_queue_requests(const char *name, int *unpolled)
{
	char path[256], line[512];
	int n = 0, found = 0;

	*unpolled = 0;
	for (int h = 0; h < 64; h++) {
		FILE *f;

		snprintf(path, sizeof(path),
			 "/sys/kernel/debug/block/%s/hctx%d/type", name, h);
		if (read_text(path, line, sizeof(line)) < 0)
			break;
		found = 1;
		if (strcmp(line, "poll"))
			continue;
		snprintf(path, sizeof(path),
			 "/sys/kernel/debug/block/%s/hctx%d/busy", name, h);
		f = fopen(path, "r");
		if (!f)
			return -1;
		while (fgets(line, sizeof(line), f)) {
			n++;
			if (!strstr(line, "POLLED"))
				(*unpolled)++;
		}
		fclose(f);
	}
	return found ? n : -1;
}

/*
 * A polled ring's batch of two 4 KiB reads, which go whole to a poll
 * queue, and a 256 KiB read, which the block layer splits (max_sectors_kb
 * at 64) and which therefore is not polled, on the namespace that holds
 * each command NVME_SLOW_LATENCY_S: while they are in flight, the poll
 * queues hold the two small reads and nothing that is not polled, and all
 * three complete.  The split read used to take a request the plug had
 * cached for the poll queue (io_uring plugs batches of more than 2), so
 * its first part went there, where nobody polls for it once the reads
 * around it are reaped: the ring_mode IOPOLL tests hung now and then until
 * the I/O timeout.  The plug gets requests in batches only after a reset
 * of this controller, whose namespaces share a tag set: the test resets it
 * first.
 */
TEST_F(dmabuf_rw, iopoll_split_read_keeps_off_the_poll_queues)
{
	char path[256], kb_path[256], old_kb[32], name[32];
	int sfd, rfd, memfd, ubuf, n, unpolled;
	unsigned int done = 0;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	double start;

	REQUIRE_POLL_QUEUES();
	nvme_ns_name(2, name, sizeof(name));
	snprintf(kb_path, sizeof(kb_path), "/sys/block/%s/queue/max_sectors_kb",
		 name);
	if (read_text(kb_path, old_kb, sizeof(old_kb)) < 0)
		SKIP(return, "no slow namespace %s", name);
	if (poll_queue_requests(name, &unpolled) < 0)
		SKIP(return, "no blk-mq debugfs for %s", name);
	rfd = open(nvme_path("/sys/block/%s/device/reset_controller"), O_WRONLY);
	ASSERT_LE(0, rfd);
	ASSERT_EQ(1, pwrite(rfd, "1", 1, 0));
	close(rfd);

	snprintf(path, sizeof(path), "/dev/%s", name);
	sfd = open(path, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, sfd);
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, IORING_SETUP_IOPOLL));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, ubuf, sfd));
	/* mapped before the batch, whose reads are then issued inline */
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&ring, false, sfd, 0, 0, 4096, 0));
	ASSERT_EQ(0, write_text(kb_path, "64"));

	for (int i = 0; i < 3; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		unsigned int len = i == 2 ? 262144 : 4096;

		io_uring_prep_read_fixed(sqe, sfd, (void *)(uintptr_t)(i * 262144),
					 len, (uint64_t)i * 262144, 0);
		sqe->user_data = len;
	}
	start = now_sec();
	/* no ASSERT from here: the limit must be restored */
	EXPECT_EQ(3, io_uring_submit(&ring));
	usleep(NVME_SLOW_LATENCY_S * 1e6 / 4);
	n = poll_queue_requests(name, &unpolled);
	EXPECT_EQ(2, n);
	EXPECT_EQ(0, unpolled)
		TH_LOG("%d of the %d requests on the poll queues are not polled",
		       unpolled, n);

	while (done < 3 && now_sec() - start < NVME_SLOW_LATENCY_S + 4) {
		if (io_uring_get_events(&ring) < 0)
			break;
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			EXPECT_EQ((int)cqe->user_data, cqe->res);
			io_uring_cqe_seen(&ring, cqe);
			done++;
		}
	}
	EXPECT_EQ(3, done)
		TH_LOG("%u of 3 reads done after %.0f s of polling", done,
		       NVME_SLOW_LATENCY_S + 4);
	EXPECT_EQ(0, write_text(kb_path, old_kb));
	io_uring_queue_exit(&ring);
	close(ubuf);
	close(memfd);
	close(sfd);
}

/*
 * NVMe passthrough through the namespace's generic device (/dev/ngXnY),
 * with a slot registered for that device: a ring of big SQEs and CQEs, plain
 * or IOPOLL.
 */
FIXTURE(passthru) {
	struct io_uring ring;
	int ng, bdev;
	unsigned int nsid, lba_shift, max_bytes;
};

FIXTURE_VARIANT(passthru) {
	unsigned int ring_flags;
};

FIXTURE_VARIANT_ADD(passthru, plain) {
	.ring_flags = 0,
};

FIXTURE_VARIANT_ADD(passthru, iopoll) {
	.ring_flags = IORING_SETUP_IOPOLL,
};

/* The disk region of the passthrough tests: the last 16 MiB but 8. */
#define PASSTHRU_DISK	(1008 * MiB)

FIXTURE_SETUP(passthru)
{
	char text[32];

	REQUIRE_DMABUF_IO();
	if (variant->ring_flags & IORING_SETUP_IOPOLL)
		REQUIRE_POLL_QUEUES();
	self->bdev = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->bdev);
	self->ng = nvme_ng_open(O_RDWR, self->bdev, &self->nsid,
				&self->lba_shift);
	ASSERT_LE(0, self->ng) TH_LOG("%s: %s", nvme_ng_dev(),
				      strerror(-self->ng));
	ASSERT_LT(0, read_text(nvme_path("/sys/block/%s/queue/max_hw_sectors_kb"),
			       text, sizeof(text)));
	self->max_bytes = atoi(text) * 1024;
	ASSERT_LE(4096, self->max_bytes);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring,
			IORING_SETUP_SQE128 | IORING_SETUP_CQE32 |
			variant->ring_flags));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 8));
}

FIXTURE_TEARDOWN(passthru)
{
	io_uring_queue_exit(&self->ring);
	close(self->bdev);
	close(self->ng);
}

/* One passthrough command of @len bytes at disk offset @off; its result. */
static int nvme_io_one(struct io_uring *ring, int write, int fd,
		       unsigned int nsid, unsigned int lba_shift,
		       unsigned int idx, uint64_t buf_off, unsigned int len,
		       uint64_t off)
{
	struct fixed_io x = { .buf_off = buf_off, .off = off, .len = len };

	return nvme_io_batch(ring, write, fd, nsid, lba_shift, idx, &x, 1, 1);
}

/*
 * NVMe Write commands from a udmabuf and Read commands back into a
 * system-heap buffer, both registered for the generic device, at queue
 * depths 1 to 64 and sizes from 4 KiB to the largest command the
 * controller takes (max_hw_sectors_kb: 128 KiB behind an IOMMU, the DMA
 * API's optimal mapping size), at page offsets of the buffers and at
 * offsets that start inside a page (only DMA-aligned, by 4 bytes, so each
 * command's data crosses page boundaries where it does not start one),
 * checked through the heap buffer's CPU view and a pread of the block
 * device.
 */
TEST_F(passthru, round_trips_at_every_depth_and_size)
{
	static struct fixed_io x[256];
	const struct { unsigned int len, qd, n, skew; } plan[] = {
		{ 4096, 1, 64, 0 }, { 4096, 64, 256, 0 }, { 65536, 16, 64, 0 },
		{ self->max_bytes / 2, 64, 32, 0 }, { self->max_bytes, 8, 8, 0 },
		{ 4096, 16, 64, 512 }, { 65536, 8, 16, 2052 },
	};
	const size_t size = 8 * MiB;
	struct buf_pair p;
	void *pbuf;

	ASSERT_GE(size, 32 * (size_t)self->max_bytes / 2);
	ASSERT_GE(size, 8 * (size_t)self->max_bytes);
	ASSERT_GE(size, 2052 + 16 * 65536);
	pair_setup(_metadata, &p, &self->ring, self->ng, size);
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, size));

	for (unsigned int r = 0; r < sizeof(plan) / sizeof(plan[0]); r++) {
		unsigned int len = plan[r].len, n = plan[r].n;
		unsigned int skew = plan[r].skew;
		uint64_t seed = 0x9a55 + r;

		for (unsigned int i = 0; i < n; i++) {
			x[i].len = len;
			x[i].buf_off = skew + (uint64_t)i * len;
			x[i].off = PASSTHRU_DISK + (uint64_t)i * len;
		}
		pattern_fill(p.umap + skew, (size_t)n * len, seed, PASSTHRU_DISK);
		ASSERT_EQ(0, nvme_io_batch(&self->ring, 1, self->ng, self->nsid,
					   self->lba_shift, 0, x, n, plan[r].qd))
			TH_LOG("writes of %u x %u at QD %u, offset %u", n, len,
			       plan[r].qd, skew);
		ASSERT_EQ(0, nvme_io_batch(&self->ring, 0, self->ng, self->nsid,
					   self->lba_shift, 1, x, n, plan[r].qd))
			TH_LOG("reads of %u x %u at QD %u, offset %u", n, len,
			       plan[r].qd, skew);

		ASSERT_EQ(0, dmabufrw_cpu_begin(p.heap, DMA_BUF_SYNC_READ));
		EXPECT_EQ(-1, pattern_check(p.hmap + skew, (size_t)n * len, seed,
					    PASSTHRU_DISK))
			TH_LOG("%u x %u at QD %u: the heap buffer", n, len,
			       plan[r].qd);
		ASSERT_EQ(0, dmabufrw_cpu_end(p.heap, DMA_BUF_SYNC_READ));
		ASSERT_EQ((ssize_t)n * len, pread(self->bdev, pbuf,
						  (size_t)n * len, PASSTHRU_DISK));
		EXPECT_EQ(-1, pattern_check(pbuf, (size_t)n * len, seed,
					    PASSTHRU_DISK))
			TH_LOG("%u x %u at QD %u: the disk", n, len, plan[r].qd);
	}
	free(pbuf);
	pair_teardown(&p, &self->ring);
}

/*
 * The refusals of passthrough commands to dma-buf slots, each with its
 * errno, and none reaches the disk: a command longer than the controller
 * takes in one (never split), misaligned for its DMA, or with a timeout
 * longer than the I/O timeout: EINVAL; a range leaving the slot or an
 * empty slot: EFAULT; a slot registered for the block device: EBADF, as a
 * slot registered for the generic device is for READ_FIXED on the block
 * device and for a command through another namespace's generic device;
 * the vectored command, a command with metadata, and one through the
 * controller's admin device: EOPNOTSUPP; a Read into a dma-buf open
 * read-only: EFAULT; a Write through a generic device open read-only,
 * which root may send (NVMe lets CAP_SYS_ADMIN send any command), with a
 * slot registered for that device, which mapped the buffer for the device
 * to write only: EINVAL.
 */
TEST_F(passthru, refusals_change_nothing)
{
	const uint64_t disk = PASSTHRU_DISK;
	const size_t size = 4 * MiB;
	const unsigned int max = self->max_bytes;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	char name[32], path[64], ctrl[32];
	struct buf_pair p;
	struct iovec iov;
	int ro, ngro, other;
	void *pbuf;

	ASSERT_GE(size, 2 * (size_t)max);
	pair_setup(_metadata, &p, &self->ring, self->ng, size);
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, 2 * max));
	ASSERT_EQ(0, pattern_fill_fd(self->bdev, disk, 2 * max, 0x9e7, disk));
	memset(p.umap, 0xa5, size);

	/* one block more than the controller takes in one command */
	EXPECT_EQ(-EINVAL, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				       self->lba_shift, 0, 0, max + 4096, disk));
	/* the offset misaligned for the controller's DMA */
	EXPECT_EQ(-EINVAL, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				       self->lba_shift, 0, 2, 4096, disk));
	/* the range leaves the slot */
	EXPECT_EQ(-EFAULT, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				       self->lba_shift, 0, size - 4096, 8192,
				       disk));
	/* an empty slot */
	EXPECT_EQ(-EFAULT, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				       self->lba_shift, 5, 0, 4096, disk));

	/* a slot registered for the block device serves no passthrough ... */
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 2, p.ubuf,
					      self->bdev));
	EXPECT_EQ(-EBADF, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				      self->lba_shift, 2, 0, 4096, disk));
	/* ... and one for the generic device no I/O on the block device */
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, 1, self->bdev, 0, 0,
					    4096, disk));

	/* a command through another namespace's generic device */
	nvme_ns_name(3, name, sizeof(name));
	nvme_disk_ng(name, path, sizeof(path));
	other = open(path, O_RDONLY);
	ASSERT_LE(0, other) TH_LOG("%s: %s", path, strerror(errno));
	EXPECT_EQ(-EBADF, nvme_io_one(&self->ring, 0, other, 3,
				      self->lba_shift, 0, 0, 4096, 0));
	close(other);

	/* a command through the controller's admin device (Identify) */
	nvme_disk_ctrl(name, ctrl, sizeof(ctrl));
	snprintf(path, sizeof(path), "/dev/%s", ctrl);
	other = open(path, O_RDONLY);
	ASSERT_LE(0, other) TH_LOG("%s: %s", path, strerror(errno));
	sqe = io_uring_get_sqe(&self->ring);
	dmabufrw_prep_nvme_read_dmabuf(sqe, other, 0, 0, 0, 4096, 0,
				       self->lba_shift);
	sqe->cmd_op = NVME_URING_CMD_ADMIN;
	((struct nvme_uring_cmd *)sqe->cmd)->opcode = 0x06;
	((struct nvme_uring_cmd *)sqe->cmd)->cdw10 = 1;
	((struct nvme_uring_cmd *)sqe->cmd)->cdw12 = 0;
	ASSERT_EQ(1, io_uring_submit_and_wait(&self->ring, 1));
	ASSERT_EQ(0, io_uring_peek_cqe(&self->ring, &cqe));
	EXPECT_EQ(-EOPNOTSUPP, cqe->res);
	io_uring_cqe_seen(&self->ring, cqe);
	close(other);

	/* metadata with a dma-buf; a timeout beyond the I/O timeout */
	sqe = io_uring_get_sqe(&self->ring);
	dmabufrw_prep_nvme_write_dmabuf(sqe, self->ng, self->nsid, 0, 0,
					4096, disk >> self->lba_shift,
					self->lba_shift);
	((struct nvme_uring_cmd *)sqe->cmd)->metadata = (uintptr_t)pbuf;
	((struct nvme_uring_cmd *)sqe->cmd)->metadata_len = 8;
	sqe = io_uring_get_sqe(&self->ring);
	dmabufrw_prep_nvme_write_dmabuf(sqe, self->ng, self->nsid, 0, 0,
					4096, disk >> self->lba_shift,
					self->lba_shift);
	((struct nvme_uring_cmd *)sqe->cmd)->timeout_ms = 3600 * 1000;
	sqe->user_data = 1;
	ASSERT_EQ(2, io_uring_submit_and_wait(&self->ring, 2));
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(0, io_uring_peek_cqe(&self->ring, &cqe));
		EXPECT_EQ(cqe->user_data ? -EINVAL : -EOPNOTSUPP, cqe->res)
			TH_LOG("%s", cqe->user_data ? "timeout" : "metadata");
		io_uring_cqe_seen(&self->ring, cqe);
	}

	/* the vectored command takes no dma-buf slot */
	sqe = io_uring_get_sqe(&self->ring);
	dmabufrw_prep_nvme_write_dmabuf(sqe, self->ng, self->nsid, 0, 0,
					4096, disk >> self->lba_shift,
					self->lba_shift);
	dmabufrw_dmabuf_iovec(&iov, 0, 4096);
	sqe->cmd_op = NVME_URING_CMD_IO_VEC;
	((struct nvme_uring_cmd *)sqe->cmd)->addr = (uintptr_t)&iov;
	((struct nvme_uring_cmd *)sqe->cmd)->data_len = 1;
	ASSERT_EQ(1, io_uring_submit_and_wait(&self->ring, 1));
	ASSERT_EQ(0, io_uring_peek_cqe(&self->ring, &cqe));
	EXPECT_EQ(-EOPNOTSUPP, cqe->res);
	io_uring_cqe_seen(&self->ring, cqe);

	/* a Write through a generic device open read-only, mapped for reads */
	ngro = open(nvme_ng_dev(), O_RDONLY);
	ASSERT_LE(0, ngro);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 3, p.ubuf, ngro));
	EXPECT_EQ(-EINVAL, nvme_io_one(&self->ring, 1, ngro, self->nsid,
				       self->lba_shift, 3, 0, 4096, disk));

	ASSERT_EQ(2 * max, pread(self->bdev, pbuf, 2 * max, disk));
	EXPECT_EQ(-1, pattern_check(pbuf, 2 * max, 0x9e7, disk))
		TH_LOG("a refused passthrough write changed the disk");

	/* the controller may not write a dma-buf opened read-only */
	ro = heap_alloc_mode(size, O_RDONLY);
	ASSERT_LE(0, ro);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 4, ro, self->ng));
	EXPECT_EQ(-EFAULT, nvme_io_one(&self->ring, 0, self->ng, self->nsid,
				       self->lba_shift, 4, 0, 4096, disk));
	/* the good commands work: the largest, a Read through ngro */
	EXPECT_EQ(0, nvme_io_one(&self->ring, 1, self->ng, self->nsid,
				 self->lba_shift, 4, 0, max, disk));
	EXPECT_EQ(0, nvme_io_one(&self->ring, 0, ngro, self->nsid,
				 self->lba_shift, 3, 0, max, disk));
	ASSERT_EQ(max, pread(self->bdev, pbuf, max, disk));
	EXPECT_EQ(-1, first_nonzero(pbuf, max))
		TH_LOG("the read-only heap buffer's zeroes did not reach the disk");
	EXPECT_EQ(-1, first_nonzero(p.umap, max))
		TH_LOG("the Read through the read-only device did not land");

	for (unsigned int slot = 2; slot <= 4; slot++)
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, slot));
	close(ro);
	close(ngro);
	free(pbuf);
	pair_teardown(&p, &self->ring);
}

struct reset_io {
	struct io_uring *ring;
	int fd;
	volatile int stop;
	unsigned long done, failed;
	int bad_errno;
};

/* Keep 16 dma-buf reads of 64 KiB in flight until told to stop. */
static void *reset_io_thread(void *arg)
{
	struct reset_io *r = arg;
	struct io_uring_cqe *cqe;
	unsigned int inflight = 0, n = 0;

	while (!r->stop || inflight) {
		while (!r->stop && inflight < 16) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(r->ring);

			if (!sqe)
				break;
			io_uring_prep_read_fixed(sqe, r->fd,
				(void *)(uintptr_t)((n % 64) * 65536), 65536,
				(uint64_t)(n % 1024) * 65536, 0);
			n++;
			inflight++;
		}
		if (io_uring_submit_and_wait(r->ring, 1) < 0)
			break;
		while (io_uring_peek_cqe(r->ring, &cqe) == 0) {
			if (cqe->res == 65536) {
				r->done++;
			} else {
				r->failed++;
				if (cqe->res != -EIO && cqe->res != -EAGAIN)
					r->bad_errno = cqe->res;
			}
			io_uring_cqe_seen(r->ring, cqe);
			inflight--;
		}
	}
	return NULL;
}

/*
 * Controller resets through sysfs while dma-buf I/O runs: every I/O
 * completes (or fails with EIO), and I/O after the resets works and moves
 * the right data: the mapping outlives a reset of the controller.
 */
TEST_F(dmabuf_rw, controller_reset_with_io_running)
{
	struct reset_io r = { .ring = &self->ring, .fd = self->fd };
	int memfd, ubuf, rfd, i;
	pthread_t thr;
	void *map;

	ubuf = dmabufrw_alloc_udmabuf(4 * MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, ubuf, self->fd));
	rfd = open(nvme_path("/sys/block/%s/device/reset_controller"), O_WRONLY);
	ASSERT_LE(0, rfd);

	ASSERT_EQ(0, pthread_create(&thr, NULL, reset_io_thread, &r));
	for (i = 0; i < 3; i++) {
		usleep(300000);
		EXPECT_EQ(1, pwrite(rfd, "1", 1, 0));
	}
	usleep(300000);
	r.stop = 1;
	ASSERT_EQ(0, pthread_join(thr, NULL));
	close(rfd);
	TH_LOG("%lu reads completed, %lu failed across 3 resets", r.done, r.failed);
	EXPECT_LT(0, r.done);
	EXPECT_EQ(0, r.bad_errno);

	/* After the resets: a verified round trip through the same slot. */
	map = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, map);
	pattern_fill(map, MiB, 0xbeef, 500 * MiB);
	ASSERT_EQ((int)MiB, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0, MiB,
					      500 * MiB));
	memset(map + MiB, 0, MiB);
	ASSERT_EQ((int)MiB, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, MiB, MiB,
					      500 * MiB));
	EXPECT_EQ(-1, pattern_check(map + MiB, MiB, 0xbeef, 500 * MiB));
	munmap(map, 4 * MiB);
	close(ubuf);
	close(memfd);
}

/*
 * A whole buffer table registered from descriptors: user memory, a dma-buf
 * and an empty slot; bad descriptors fail the registration with EINVAL.
 */
TEST(table_registered_from_descriptors)
{
	REQUIRE_DMABUF_IO();
	struct dmabufrw_regbuf_desc d[3] = {};
	struct io_uring ring;
	int fd, memfd, ubuf;
	void *plain, *map;

	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, posix_memalign(&plain, 4096, MiB));
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));

	d[0].type = DMABUFRW_REGBUF_USER;
	d[0].addr = (uintptr_t)plain;
	d[0].len = MiB;
	d[1].type = DMABUFRW_REGBUF_DMABUF;
	d[1].dmabuf_fd = ubuf;
	d[1].target_fd = fd;
	d[2].type = DMABUFRW_REGBUF_EMPTY;

	/* reserved field, unknown flag, unknown type, unused field set */
	d[1].__resv[1] = 1;
	EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&ring, d, 3));
	d[1].__resv[1] = 0;
	d[1].flags = 1U << 31;
	EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&ring, d, 3));
	d[1].flags = 0;
	d[2].type = 7;
	EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&ring, d, 3));
	d[2].type = DMABUFRW_REGBUF_EMPTY;
	d[2].addr = 4096;
	EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&ring, d, 3));
	d[2].addr = 0;
	/* a dma-buf range with an offset but no length */
	d[1].addr = 4096;
	EXPECT_EQ(-EINVAL, dmabufrw_register_buffers_desc(&ring, d, 3));
	d[1].addr = 0;

	ASSERT_EQ(0, dmabufrw_register_buffers_desc(&ring, d, 3));
	pattern_fill(plain, 4096, 0x5a, 600 * MiB);
	{
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		struct io_uring_cqe *cqe;

		io_uring_prep_write_fixed(sqe, fd, plain, 4096, 600 * MiB, 0);
		io_uring_submit(&ring);
		ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
		EXPECT_EQ(4096, cqe->res);
		io_uring_cqe_seen(&ring, cqe);
	}
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&ring, false, fd, 1, 0, 4096, 600 * MiB));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&ring, false, fd, 2, 0, 4096, 600 * MiB));
	map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, map);
	EXPECT_EQ(-1, pattern_check(map, 4096, 0x5a, 600 * MiB));
	munmap(map, 4096);
	io_uring_queue_exit(&ring);
	free(plain);
	close(ubuf);
	close(memfd);
	close(fd);
}

static void write_sysfs(struct __test_metadata *_metadata, const char *path)
{
	int fd = open(path, O_WRONLY);

	ASSERT_LE(0, fd) TH_LOG("open %s: %s", path, strerror(errno));
	ASSERT_EQ(1, write(fd, "1", 1));
	close(fd);
}

/*
 * Removing the controller with a dma-buf registered: the registration is
 * torn down with the device (no leak, no stale mapping), I/O through it
 * stops, a new registration fails with ENODEV, and once the bus is rescanned
 * the new controller takes registrations again (as NVME_DEV, for the
 * tests that follow).
 */
TEST(controller_removal_and_rescan)
{
	REQUIRE_DMABUF_IO();
	char link[PATH_MAX], remove[PATH_MAX];
	struct io_uring ring;
	int fd, memfd, ubuf, ret, i;
	ssize_t n;

	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	n = readlink(nvme_path("/sys/block/%s/device/device"), link,
		     sizeof(link) - 1);
	ASSERT_LT(0, n);
	link[n] = 0;
	snprintf(remove, sizeof(remove), "/sys/bus/pci/devices/%s/remove",
		 strrchr(link, '/') + 1);
	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, ubuf, fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&ring, false, fd, 0, 0, 4096, 0));

	write_sysfs(_metadata, remove);
	/* The disk is gone: end of device (0) or an error, never data. */
	ret = dmabufrw_rw_fixed(&ring, false, fd, 0, 0, 4096, 0);
	EXPECT_GE(0, ret);
	EXPECT_EQ(-ENODEV, dmabufrw_register_dmabuf(&ring, 1, ubuf, fd));
	EXPECT_EQ(0, dmabufrw_unregister_slot(&ring, 0));
	io_uring_queue_exit(&ring);
	close(fd);

	write_sysfs(_metadata, "/sys/bus/pci/rescan");
	for (i = 0, fd = -1; i < 100 && fd < 0; i++) {
		fd = open(NVME_DEV, O_RDWR | O_DIRECT);
		if (fd < 0)
			usleep(100000);
	}
	ASSERT_LE(0, fd) TH_LOG("no %s after rescan", NVME_DEV);
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	EXPECT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, ubuf, fd));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&ring, false, fd, 0, 0, 4096, 0));
	io_uring_queue_exit(&ring);
	close(fd);
	close(ubuf);
	close(memfd);
}

/*
 * For the programs below, which run in a process of their own: open the
 * namespace and a ring with slot 0 registered, a fresh udmabuf (@dmabuf)
 * or user buffer of @size; @addr is the sqe->addr of its start.  Exits
 * the process on failure.
 */
static void child_setup(struct io_uring *ring, int *fd, void **addr,
			size_t size, int dmabuf)
{
	struct iovec iov;
	int ubuf;

	*fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	if (*fd < 0 || io_uring_queue_init(8, ring, 0))
		_exit(200);
	*addr = NULL;
	if (dmabuf) {
		ubuf = dmabufrw_alloc_udmabuf(size, NULL);
		if (ubuf < 0 || io_uring_register_buffers_sparse(ring, 1) ||
		    dmabufrw_register_dmabuf(ring, 0, ubuf, *fd))
			_exit(201);
		return;
	}
	if (posix_memalign(addr, 4096, size))
		_exit(202);
	iov = (struct iovec){ *addr, size };
	if (io_uring_register_buffers(ring, &iov, 1))
		_exit(203);
}

/* Run @child(@dmabuf) in a new process and return its exit status. */
static int run_in_child(void (*child)(int dmabuf), int dmabuf)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (!pid)
		child(dmabuf);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/*
 * One READ_FIXED from a fresh registration of a user buffer (@dmabuf
 * false) or of a udmabuf, then exit with the number of io-wq workers the
 * process has (100 + n if the read failed).
 */
static void first_read_in_child(int dmabuf)
{
	struct io_uring ring;
	void *addr;
	int fd, res, n;

	child_setup(&ring, &fd, &addr, MiB, dmabuf);
	res = dmabufrw_rw_fixed(&ring, false, fd, 0, (uintptr_t)addr, 4096, 0);
	n = iowq_workers(0);
	_exit(res == 4096 ? n : 100 + n);
}

/*
 * The NOWAIT path: the first I/O on a new registration finds no mapping,
 * fails its non-blocking issue with EAGAIN and is retried by an io-wq
 * worker that maps the buffer (the worker thread shows that it ran).  The
 * same read from a registered user buffer completes inline, without one.
 */
TEST(first_io_maps_from_iowq_after_nowait_eagain)
{
	REQUIRE_DMABUF_IO();
	EXPECT_EQ(0, run_in_child(first_read_in_child, 0));
	EXPECT_LE(1, run_in_child(first_read_in_child, 1));
	EXPECT_GT(100, run_in_child(first_read_in_child, 1));
}

#define LARGE_IO	(16 * MiB)

struct large_io {
	struct io_uring ring;
	int fd;
	void *addr;
};

/* Block 0 of the namespace read into slot 0 and written back. */
static void *map_both_ways(void *arg)
{
	struct large_io *io = arg;
	uintptr_t addr = (uintptr_t)io->addr;

	return (void *)(long)(dmabufrw_rw_fixed(&io->ring, false, io->fd, 0,
						addr, 4096, 0) == 4096 &&
			      dmabufrw_rw_fixed(&io->ring, true, io->fd, 0,
						addr, 4096, 0) == 4096);
}

/*
 * In a new process: register a 16 MiB udmabuf (@dmabuf) or user buffer,
 * have another thread do the first I/O in each direction (which maps the
 * dma-buf from an io-wq worker of that thread), then read 16 MiB into the
 * buffer and write them back at offset 0 from this thread.  Exits with the
 * number of io-wq workers this thread got (100 + n if an I/O failed).
 */
static void large_io_in_child(int dmabuf)
{
	struct large_io io;
	pthread_t helper;
	void *helper_ok;
	bool ok;
	int n;

	child_setup(&io.ring, &io.fd, &io.addr, LARGE_IO, dmabuf);
	if (pthread_create(&helper, NULL, map_both_ways, &io) ||
	    pthread_join(helper, &helper_ok) || !helper_ok)
		_exit(204);
	if (iowq_workers(gettid()))
		_exit(205);
	ok = dmabufrw_rw_fixed(&io.ring, false, io.fd, 0, (uintptr_t)io.addr,
			       LARGE_IO, 0) == LARGE_IO &&
	     dmabufrw_rw_fixed(&io.ring, true, io.fd, 0, (uintptr_t)io.addr,
			       LARGE_IO, 0) == LARGE_IO;
	n = iowq_workers(gettid());
	_exit(ok ? n : 100 + n);
}

/*
 * A transfer larger than the device takes in one command is one dma-buf
 * bio that the block layer splits.  Once the registration is mapped, a
 * 16 MiB READ_FIXED and WRITE_FIXED complete from the submitting thread's
 * nonblocking issue: no io-wq worker serves that thread.  (A registered
 * user buffer of the same size is retried from io-wq: the block layer
 * refuses to split its nonblocking bio.)
 */
TEST(mapped_16m_read_and_write_complete_without_iowq)
{
	char path[300], text[32];
	long max_kb;

	REQUIRE_DMABUF_IO();
	snprintf(path, sizeof(path), "/sys/block/%s/queue/max_sectors_kb",
		 nvme_path("%s"));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	max_kb = strtol(text, NULL, 10);
	if (max_kb <= 0 || max_kb * 1024 >= LARGE_IO)
		SKIP(return, "%s takes %ld KiB per command: nothing to split",
		     NVME_DEV, max_kb);
	TH_LOG("%s: %ld KiB per command, a registered user buffer's 16 MiB I/O: %d io-wq workers",
	       NVME_DEV, max_kb, run_in_child(large_io_in_child, 0));
	EXPECT_EQ(0, run_in_child(large_io_in_child, 1));
}

/*
 * DMA-API debug's error count, or -1 without it.  It counts every error
 * since boot; tests compare it before and after.
 */
static long dma_api_errors(void)
{
	char text[32];

	if (read_text("/sys/kernel/debug/dma-api/error_count", text,
		      sizeof(text)) <= 0)
		return -1;
	return strtol(text, NULL, 10);
}

/*
 * A system-heap buffer that the NVMe controller has mapped for writing
 * only (a registration for a read-only target serves reads into it) is
 * synced by userspace for reading, writing and both: the heap must sync
 * the controller's mapping in the direction it was mapped, which the
 * DMA API requires and DMA-API debug checks.  Where the device needs no
 * syncs (behind the rig's IOMMU) there is nothing to check; without an
 * IOMMU each sync in the CPU's direction was an error.  And the CPU sees
 * the data the device wrote, whichever way it syncs.
 */
TEST(heap_syncs_follow_the_direction_the_device_mapped)
{
	static const uint64_t flags[] = {
		DMA_BUF_SYNC_RW, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE,
	};
	const uint64_t disk_off = 510 * MiB;
	struct io_uring ring;
	long before, after;
	int fd, rfd, heap;
	void *pbuf, *map;

	REQUIRE_DMABUF_IO();
	/* without DMA-API debug (not the debug kernel) only the data count */
	before = dma_api_errors();
	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, posix_memalign(&pbuf, 4096, MiB));
	pattern_fill(pbuf, MiB, 0x5c, disk_off);
	ASSERT_EQ((ssize_t)MiB, pwrite(fd, pbuf, MiB, disk_off));
	rfd = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, rfd);
	heap = dmabufrw_alloc_heap("system", MiB);
	ASSERT_LE(0, heap);
	ASSERT_EQ(0, io_uring_queue_init(4, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, heap, rfd));
	ASSERT_EQ((int)MiB, dmabufrw_rw_fixed(&ring, false, rfd, 0, 0, MiB,
					      disk_off));

	map = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, heap, 0);
	ASSERT_NE(MAP_FAILED, map);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(0, dmabufrw_cpu_begin(heap, flags[i]));
		if (flags[i] & DMA_BUF_SYNC_READ)
			EXPECT_EQ(-1, pattern_check(map, MiB, 0x5c, disk_off));
		ASSERT_EQ(0, dmabufrw_cpu_end(heap, flags[i]));
	}
	munmap(map, MiB);
	after = dma_api_errors();
	EXPECT_EQ(before, after) TH_LOG("DMA-API errors: %ld before, %ld after", before, after);

	io_uring_queue_exit(&ring);
	close(heap);
	close(rfd);
	close(fd);
	free(pbuf);
}

TEST_HARNESS_MAIN
