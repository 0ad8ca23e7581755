// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf direct I/O on files of ext4 and XFS: round trips, holes and
 * unwritten extents, EOF, appends, one registration (made with a file or a
 * directory) serving every file of the file system, and each refusal with
 * its errno and nothing written.
 *
 * The VM runner (scripts/run-vm) attaches ext4 on the first partition of
 * namespace 3 and XFS on the whole of namespace 4; every test mounts both
 * and unmounts them at its end, so that the other programs (which remove
 * and reset the controller) never run with a file system mounted, and the
 * host checks both once the VM is done.  The tests run a third time on
 * ext4 over an md RAID0 of the four member controllers (64 KiB chunks),
 * which the runner writes striped onto them (scripts/mk-fs-images --raid0):
 * one registration then maps the buffer once for each member.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/fiemap.h>
#include <linux/magic.h>
#include <linux/dma-buf.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "stack.h"
#include "dmabufrw.h"

#define KiB	1024UL
#define MiB	(1024UL * 1024)

#define RAID0_MNT	"/mnt/raid0"
#define RAID0_CHUNK	(64 * KiB)

FIXTURE(files) {
	struct io_uring ring;
	const char *dir;	/* this variant's file system */
	const char *other;	/* another one */
	char fsdev[64];		/* the device under dir */
	struct md_array md;	/* the RAID0 variant's array */
	size_t size;
	int memfd, ubuf, heap;
	void *umap, *hmap;
};

FIXTURE_VARIANT(files) {
	bool ext4;
	bool raid0;		/* ext4 on md RAID0 */
};

FIXTURE_VARIANT_ADD(files, ext4) { .ext4 = true };
FIXTURE_VARIANT_ADD(files, xfs) { .ext4 = false };
FIXTURE_VARIANT_ADD(files, ext4_on_md_raid0) { .ext4 = true, .raid0 = true };

/* Assemble the members' RAID0 and mount its ext4 at RAID0_MNT. */
static void raid0_mount(struct __test_metadata *_metadata,
			FIXTURE_DATA(files) *self)
{
	dev_t member[STACK_MEMBERS];
	int i;

	for (i = 0; i < STACK_MEMBERS; i++) {
		member[i] = member_devt(i);
		if (!member[i])
			SKIP(return, "no member controller %d (scripts/run-vm test mode)", i);
	}
	if (access("/sys/module/md_mod/parameters/new_array", W_OK))
		SKIP(return, "the kernel has no md (CONFIG_BLK_DEV_MD)");
	ASSERT_EQ(0, md_create(&self->md, 0, member, STACK_MEMBERS, RAID0_CHUNK));
	mkdir(RAID0_MNT, 0755);
	if (mount(self->md.path, RAID0_MNT, "ext4", 0, NULL)) {
		uint16_t magic = 0;
		int fd = open(self->md.path, O_RDONLY);

		TH_LOG("mount %s: %s", self->md.path, strerror(errno));
		if (fd >= 0 && pread(fd, &magic, 2, 1024 + 56) == 2 &&
		    magic != 0xef53)
			TH_LOG("no ext4 on the members: scripts/mk-fs-images --raid0 puts it there, and the stacking tests write over it, so they run after this one");
		if (fd >= 0)
			close(fd);
		md_stop(&self->md);
		ASSERT_TRUE(false);
	}
}

static void fs_env_setup(struct __test_metadata *_metadata,
			FIXTURE_DATA(files) *self, bool ext4, bool raid0)
{
	char name[32];
	int ret;

	self->md.fd = -1;
	/* first: a failed setup has no teardown, and this one cleans up */
	if (raid0) {
		raid0_mount(_metadata, self);
		/* skipped there: nothing to mount here either */
		if (_metadata->exit_code)
			return;
	}
	ret = mount_ns(3, 1, "ext4", EXT4_MNT, NULL);
	ASSERT_EQ(0, ret) TH_LOG("mount ext4: %s", strerror(-ret));
	ret = mount_ns(4, 0, "xfs", XFS_MNT, NULL);
	ASSERT_EQ(0, ret) TH_LOG("mount xfs: %s", strerror(-ret));
	self->dir = ext4 ? EXT4_MNT : XFS_MNT;
	self->other = ext4 ? XFS_MNT : EXT4_MNT;
	nvme_ns_name(ext4 ? 3 : 4, name, sizeof(name));
	snprintf(self->fsdev, sizeof(self->fsdev), "/dev/%s%s", name,
		 ext4 ? "p1" : "");
	if (raid0) {
		snprintf(self->fsdev, sizeof(self->fsdev), "%s", self->md.path);
		self->dir = RAID0_MNT;
	}

	self->size = 8 * MiB;
	self->ubuf = dmabufrw_alloc_udmabuf(self->size, &self->memfd);
	ASSERT_LE(0, self->ubuf);
	self->heap = dmabufrw_alloc_heap("system", self->size);
	ASSERT_LE(0, self->heap);
	self->umap = mmap(NULL, self->size, PROT_READ | PROT_WRITE, MAP_SHARED,
			  self->memfd, 0);
	ASSERT_NE(MAP_FAILED, self->umap);
	self->hmap = mmap(NULL, self->size, PROT_READ | PROT_WRITE, MAP_SHARED,
			  self->heap, 0);
	ASSERT_NE(MAP_FAILED, self->hmap);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 8));
}

static void fs_env_teardown(struct __test_metadata *_metadata,
			   FIXTURE_DATA(files) *self)
{
	io_uring_queue_exit(&self->ring);
	munmap(self->hmap, self->size);
	munmap(self->umap, self->size);
	close(self->heap);
	close(self->ubuf);
	close(self->memfd);
	EXPECT_EQ(0, umount_busy(EXT4_MNT));
	EXPECT_EQ(0, umount_busy(XFS_MNT));
	if (self->md.fd >= 0) {
		EXPECT_EQ(0, umount_busy(RAID0_MNT));
		EXPECT_EQ(0, md_stop(&self->md));
	}
}

FIXTURE_SETUP(files)
{
	REQUIRE_DMABUF_IO();
	fs_env_setup(_metadata, self, variant->ext4, variant->raid0);
}

FIXTURE_TEARDOWN(files)
{
	fs_env_teardown(_metadata, self);
}

static const char *fpath(const char *dir, const char *name)
{
	static char path[2][256];
	static int i;

	i ^= 1;
	snprintf(path[i], sizeof(path[i]), "%s/%s", dir, name);
	return path[i];
}

/* A new empty file, open for direct I/O. */
static int new_file(const char *dir, const char *name)
{
	const char *p = fpath(dir, name);

	unlink(p);
	return open(p, O_RDWR | O_CREAT | O_DIRECT, 0600);
}

/* Register the udmabuf in slot 0 and the heap buffer in slot 1 for @fd. */
static int register_pair(FIXTURE_DATA(files) *self, int fd)
{
	return dmabufrw_register_dmabuf(&self->ring, 0, self->ubuf, fd) ?:
	       dmabufrw_register_dmabuf(&self->ring, 1, self->heap, fd);
}

static long heap_check(FIXTURE_DATA(files) *self, uint64_t off, size_t len,
		       uint64_t seed, uint64_t pos)
{
	long bad;

	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
	bad = pattern_check(self->hmap + off, len, seed, pos);
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	return bad;
}

static void heap_fill(FIXTURE_DATA(files) *self, int byte)
{
	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_WRITE);
	memset(self->hmap, byte, self->size);
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_WRITE);
}

/*
 * A buffered pread of @len bytes of @path at @pos, checked against the
 * pattern of @seed from position @ppos: -1 if it matches.
 */
static long file_check_at(const char *path, uint64_t pos, size_t len,
			  uint64_t seed, uint64_t ppos)
{
	void *buf = malloc(len);
	int fd = open(path, O_RDONLY);
	long bad = -2;

	if (buf && fd >= 0 && pread(fd, buf, len, pos) == (ssize_t)len)
		bad = pattern_check(buf, len, seed, ppos);
	if (fd >= 0)
		close(fd);
	free(buf);
	return bad;
}

static long file_check(const char *path, uint64_t pos, size_t len, uint64_t seed)
{
	return file_check_at(path, pos, len, seed, pos);
}

/*
 * @n transfers of round @q: each 4 KiB to @slot bytes at a random 4 KiB-
 * aligned place of its own @slot of the buffer and of the file (the
 * round's slots follow the earlier rounds' in the file).
 */
static void random_transfers(struct fixed_io *x, unsigned int n,
			     unsigned int slot, unsigned int q)
{
	for (unsigned int i = 0; i < n; i++) {
		unsigned int len = (1 + random() % (slot / (4 * KiB))) * 4 * KiB;
		unsigned int room = (slot - len) / (4 * KiB);

		x[i].len = len;
		x[i].buf_off = i * slot + (random() % (room + 1)) * 4 * KiB;
		x[i].off = (q * n + i) * slot + (random() % (room + 1)) * 4 * KiB;
	}
}

/*
 * Random transfers (4 KiB to 256 KiB at random 4 KiB-aligned places of
 * their own 256 KiB slot of the file and of the buffers) at queue depths
 * 1 to 64: written from a udmabuf into a new file (allocating blocks and
 * extending it), read back into a heap buffer, checked through the heap
 * buffer's CPU view and through a buffered pread of the file.
 */
static void random_round_trips(struct __test_metadata *_metadata,
			       FIXTURE_DATA(files) *self, struct io_uring *ring,
			       int fd, const char *path, uint64_t seed0)
{
	const unsigned int qds[] = { 1, 8, 64 }, n = 24, slot = 256 * KiB;
	struct fixed_io x[24];
	unsigned int q, i;

	srandom(seed0);
	for (q = 0; q < 3; q++) {
		uint64_t seed = seed0 + q;

		random_transfers(x, n, slot, q);
		for (i = 0; i < n; i++)
			pattern_fill(self->umap + x[i].buf_off, x[i].len, seed,
				     x[i].off);
		ASSERT_EQ(0, fixed_io_batch(ring, true, fd, 0, x, n, qds[q]));
		heap_fill(self, 0xee);
		ASSERT_EQ(0, fixed_io_batch(ring, false, fd, 1, x, n, qds[q]));
		for (i = 0; i < n; i++) {
			EXPECT_EQ(-1, heap_check(self, x[i].buf_off, x[i].len,
						 seed, x[i].off))
				TH_LOG("qd %u transfer %u", qds[q], i);
			EXPECT_EQ(-1, file_check(path, x[i].off, x[i].len,
						 seed))
				TH_LOG("qd %u transfer %u", qds[q], i);
		}
	}
}

TEST_F(files, round_trip_at_random_offsets_and_queue_depths)
{
	const char *path = fpath(self->dir, "round-trip");
	int fd;

	fd = new_file(self->dir, "round-trip");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(self, fd));
	random_round_trips(_metadata, self, &self->ring, fd, path, 0xf11e0);
	close(fd);
	unlink(path);
}

/*
 * The same round trips on a polled ring (IORING_SETUP_IOPOLL), whose
 * completions come from the NVMe poll queues: iomap passes polling on to a
 * dma-buf bio as to a bio of pages.  Then 4 KiB reads of the written file,
 * each one bio, at QD 32: they raise less than a quarter as many
 * interrupts as I/Os, so they were polled.  md has no polled I/O: on
 * RAID0 a polled read fails with EOPNOTSUPP, into a dma-buf as into
 * memory, and moves nothing.
 */
TEST_F(files, round_trip_on_a_polled_ring)
{
	const unsigned int n = 24, slot = 256 * KiB;
	const char *path = fpath(self->dir, "polled");
	struct fixed_io x[256];
	struct io_uring ring;
	long long irqs;
	unsigned int i;
	int fd;

	REQUIRE_POLL_QUEUES();
	fd = new_file(self->dir, "polled");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, io_uring_queue_init(64, &ring, IORING_SETUP_IOPOLL));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, self->ubuf, fd));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 1, self->heap, fd));
	if (variant->raid0) {
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;
		void *mem;

		ASSERT_EQ(0, pattern_fill_fd(fd, 0, 64 * KiB, 0xf011a, 0));
		heap_fill(self, 0xee);
		EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&ring, false, fd, 1, 0,
							 64 * KiB, 0));
		dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
		EXPECT_EQ(-1, first_not(self->hmap, 64 * KiB, 0xee));
		dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
		ASSERT_EQ(0, posix_memalign(&mem, 4096, 64 * KiB));
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_read(sqe, fd, mem, 64 * KiB, 0);
		ASSERT_EQ(1, io_uring_submit(&ring));
		ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
		EXPECT_EQ(-EOPNOTSUPP, cqe->res);
		io_uring_cqe_seen(&ring, cqe);
		free(mem);
		goto out;
	}
	random_round_trips(_metadata, self, &ring, fd, path, 0xf0110);

	/* 1 MiB of the file written anew, then read back 4 KiB at a time */
	pattern_fill(self->umap, 1 * MiB, 0xf0119, 2 * n * slot);
	for (i = 0; i < 256; i++) {
		x[i].len = 4 * KiB;
		x[i].buf_off = i * 4 * KiB;
		x[i].off = 2 * n * slot + i * 4 * KiB;
	}
	ASSERT_EQ(0, fixed_io_batch(&ring, true, fd, 0, x, 256, 32));
	heap_fill(self, 0xee);
	irqs = nvme_io_interrupts();
	ASSERT_LE(0, irqs);
	ASSERT_EQ(0, fixed_io_batch(&ring, false, fd, 1, x, 256, 32));
	irqs = nvme_io_interrupts() - irqs;
	printf("# polled: 256 file reads of 4 KiB at QD 32 raised %lld interrupts\n",
	       irqs);
	EXPECT_GT(256 / 4, irqs);
	EXPECT_EQ(-1, heap_check(self, 0, 1 * MiB, 0xf0119, 2 * n * slot));
out:
	io_uring_queue_exit(&ring);
	close(fd);
	unlink(path);
}

/*
 * READV_FIXED/WRITEV_FIXED on a file: random transfers (16 KiB to 256 KiB,
 * in their own 256 KiB slot of the file and of the buffers) as rotated
 * pieces (vec_io_batch(): two ranges of the dma-buf out of order), at queue
 * depths 1 to 64, into a new file (allocating blocks and extending it) and
 * back into the heap buffer; checked through the heap buffer's CPU view and
 * a buffered pread of the file, which must hold the pieces in file order.
 */
TEST_F(files, vectored_round_trips_at_random_offsets_and_queue_depths)
{
	const unsigned int qds[] = { 1, 8, 64 }, n = 24, slot = 256 * KiB;
	const char *path = fpath(self->dir, "vectored");
	struct fixed_io x[24];
	int fd;

	fd = new_file(self->dir, "vectored");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(self, fd));
	srandom(0x7ec);
	for (unsigned int q = 0; q < 3; q++) {
		uint64_t seed = 0x7ec0 + q;

		for (unsigned int i = 0; i < n; i++) {
			unsigned int len = (1 + random() % 16) * 16 * KiB;
			unsigned int room = (slot - len) / (16 * KiB);

			x[i].len = len;
			x[i].buf_off = i * slot + (random() % (room + 1)) * 16 * KiB;
			x[i].off = (q * n + i) * slot +
				   (random() % (room + 1)) * 16 * KiB;
			vec_pattern_fill(self->umap, &x[i], seed);
		}
		ASSERT_EQ(0, vec_io_batch(&self->ring, 1, fd, 0, x, n, qds[q]));
		heap_fill(self, 0xee);
		ASSERT_EQ(0, vec_io_batch(&self->ring, 0, fd, 1, x, n, qds[q]));
		dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
		for (unsigned int i = 0; i < n; i++) {
			EXPECT_EQ(-1, vec_pattern_check(self->hmap, &x[i], seed))
				TH_LOG("qd %u transfer %u in the heap buffer",
				       qds[q], i);
		}
		dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
		for (unsigned int i = 0; i < n; i++) {
			EXPECT_EQ(-1, file_check(path, x[i].off, x[i].len, seed))
				TH_LOG("qd %u transfer %u in the file", qds[q], i);
		}
	}
	close(fd);
	unlink(path);
}

/*
 * Every range of a vectored write is checked before any data moves: with
 * the second range misaligned for the device's DMA (or a length that is
 * not whole blocks), the write fails with EINVAL and the file keeps what
 * it had, although its first range was good.
 */
TEST_F(files, vectored_misaligned_range_fails_with_einval_and_writes_nothing)
{
	const char *path = fpath(self->dir, "vec-einval");
	const uint64_t seed = 0xe1a1;
	struct iovec iov[2];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int fd;

	fd = new_file(self->dir, "vec-einval");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, pattern_fill_fd(fd, 0, 64 * KiB, seed, 0));
	ASSERT_EQ(0, fsync(fd));
	ASSERT_EQ(0, register_pair(self, fd));
	memset(self->umap, 0x5a, MiB);

	for (int c = 0; c < 2; c++) {
		dmabufrw_dmabuf_iovec(&iov[0], 0, c ? 4 * KiB + 256 : 4 * KiB);
		dmabufrw_dmabuf_iovec(&iov[1], c ? 64 * KiB : 64 * KiB + 2,
				      c ? 4 * KiB - 256 : 4 * KiB);
		sqe = io_uring_get_sqe(&self->ring);
		dmabufrw_prep_writev_dmabuf(sqe, fd, 0, iov, 2, 0);
		ASSERT_EQ(1, io_uring_submit(&self->ring));
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_EQ(-EINVAL, cqe->res) TH_LOG("case %d", c);
		io_uring_cqe_seen(&self->ring, cqe);
		EXPECT_EQ(-1, file_check(path, 0, 64 * KiB, seed))
			TH_LOG("case %d: the refused write changed the file", c);
	}
	close(fd);
	unlink(path);
}

/*
 * A vectored read of a sparse file zeroes the holes in every range they
 * cover: the read's two ranges (rotated pieces) are both partly a hole, and
 * one hole runs from the end of the first range into the second.
 */
TEST_F(files, vectored_reads_of_holes_zero_every_range)
{
	const struct fixed_io x = { .buf_off = 0, .off = 0, .len = 2 * MiB };
	const uint64_t data = 512 * KiB, seed = 0x401f;
	const char *path = fpath(self->dir, "sparse-vec");
	const unsigned int piece = x.len / VEC_PIECES;
	struct iovec iov[VEC_PIECES];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int fd;

	fd = new_file(self->dir, "sparse-vec");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ftruncate(fd, x.len));
	ASSERT_EQ(0, register_pair(self, fd));
	pattern_fill(self->umap, 64 * KiB, seed, data);
	ASSERT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					      64 * KiB, data));

	heap_fill(self, 0xee);
	vec_iovecs(&x, iov);
	sqe = io_uring_get_sqe(&self->ring);
	dmabufrw_prep_readv_dmabuf(sqe, fd, 1, iov, VEC_PIECES, x.off);
	ASSERT_EQ(1, io_uring_submit(&self->ring));
	ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
	EXPECT_EQ((int)x.len, cqe->res);
	io_uring_cqe_seen(&self->ring, cqe);

	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
	for (unsigned int j = 0; j < VEC_PIECES; j++) {
		const unsigned char *b = self->hmap + vec_piece_buf_off(&x, j);
		uint64_t pos = (uint64_t)j * piece;

		if (pos == data) {
			EXPECT_EQ(-1, pattern_check(b, 64 * KiB, seed, data));
			EXPECT_EQ(-1, first_not(b + 64 * KiB, piece - 64 * KiB, 0))
				TH_LOG("the hole after the data");
		} else {
			EXPECT_EQ(-1, first_not(b, piece, 0))
				TH_LOG("the hole at %llu", (unsigned long long)pos);
		}
	}
	/* past the read: untouched */
	EXPECT_EQ(-1, first_not(self->hmap + x.len, 64 * KiB, 0xee));
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	close(fd);
	unlink(path);
}

/* The extents FIEMAP reports for @fd, or -errno. */
static int extent_count(int fd)
{
	struct fiemap fm = { .fm_length = FIEMAP_MAX_OFFSET,
			     .fm_flags = FIEMAP_FLAG_SYNC };

	return ioctl(fd, FS_IOC_FIEMAP, &fm) ? -errno : (int)fm.fm_mapped_extents;
}

/*
 * A file fragmented on purpose, every other block punched out: one read
 * of all of it gets the data of 256 extents and the zeroes of the 256
 * holes between them; one write over all of it overwrites the extents and
 * allocates the holes; one read gets it all back.
 */
TEST_F(files, one_io_spans_hundreds_of_extents_and_holes)
{
	const size_t blk = 4 * KiB, len = 512 * blk;
	const char *path = fpath(self->dir, "fragmented");
	struct statfs sfs;
	void *buf;
	int fd, n;

	fd = new_file(self->dir, "fragmented");
	ASSERT_LE(0, fd);
	/* one block per punch (scripts/mk-fs-images makes 4 KiB blocks) */
	ASSERT_EQ(0, fstatfs(fd, &sfs));
	ASSERT_EQ((long)blk, (long)sfs.f_bsize);
	ASSERT_EQ(0, posix_memalign(&buf, blk, len));
	pattern_fill(buf, len, 0xf7a9, 0);
	ASSERT_EQ((ssize_t)len, pwrite(fd, buf, len, 0));
	for (size_t off = blk; off < len; off += 2 * blk)
		ASSERT_EQ(0, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       off, blk));
	n = extent_count(fd);
	ASSERT_EQ(256, n);
	ASSERT_EQ(0, register_pair(self, fd));

	heap_fill(self, 0xee);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, len, 0));
	for (size_t off = 0; off < len; off += 2 * blk) {
		EXPECT_EQ(-1, heap_check(self, off, blk, 0xf7a9, off))
			TH_LOG("extent at %zu", off);
		dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
		EXPECT_EQ(-1, first_not(self->hmap + off + blk, blk, 0))
			TH_LOG("hole at %zu", off + blk);
		dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	}

	pattern_fill(self->umap, len, 0xf7aa, 0);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0, len, 0));
	heap_fill(self, 0xee);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, len, 0));
	EXPECT_EQ(-1, heap_check(self, 0, len, 0xf7aa, 0));
	EXPECT_EQ(-1, file_check(path, 0, len, 0xf7aa));
	TH_LOG("extents: %d punched, %d after the write", n, extent_count(fd));
	free(buf);
	close(fd);
	unlink(path);
}

/*
 * A sparse file with a hole, data, and a preallocated (unwritten) range:
 * reading all of it into a dma-buf full of 0xee gives zeroes where the file
 * has no data (written by the CPU through the exporter's kernel mapping)
 * and the data where it has.
 */
TEST_F(files, holes_and_unwritten_extents_read_as_zeroes)
{
	const size_t len = 2 * MiB;
	const uint64_t data = 512 * KiB, prealloc = MiB, seed = 0x401e;
	const char *path = fpath(self->dir, "sparse");
	int fd;

	fd = new_file(self->dir, "sparse");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ftruncate(fd, len));
	ASSERT_EQ(0, fallocate(fd, FALLOC_FL_KEEP_SIZE, prealloc, 512 * KiB));
	ASSERT_EQ(0, register_pair(self, fd));
	pattern_fill(self->umap, 64 * KiB, seed, data);
	ASSERT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					      64 * KiB, data));

	heap_fill(self, 0xee);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0,
					      len, 0));
	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
	EXPECT_EQ(-1, first_not(self->hmap, data, 0));
	EXPECT_EQ(-1, pattern_check(self->hmap + data, 64 * KiB, seed, data));
	EXPECT_EQ(-1, first_not(self->hmap + data + 64 * KiB,
				len - data - 64 * KiB, 0));
	/* past the read: untouched */
	EXPECT_EQ(-1, first_not(self->hmap + len, 64 * KiB, 0xee));
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	close(fd);
	unlink(path);
}

/*
 * An exporter without a kernel mapping (the test exporter) cannot have a
 * hole zeroed: a read ends short at the first hole before EOF, and one that
 * starts in it fails with EOPNOTSUPP; data reads work.
 */
TEST_F(files, hole_read_without_a_kernel_mapping_fails_with_eopnotsupp)
{
	const char *path = fpath(self->dir, "texp-hole");
	int ctl, dbuf, fd;
	void *p;

	ctl = texp_open();
	ASSERT_LE(0, ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-ctl));
	dbuf = texp_create(ctl, MiB, 0);
	ASSERT_LE(0, dbuf);
	fd = new_file(self->dir, "texp-hole");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ftruncate(fd, MiB));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 2, dbuf, fd));
	ASSERT_EQ(0, posix_memalign(&p, 4096, 64 * KiB));
	pattern_fill(p, 64 * KiB, 0x7e, 0);
	ASSERT_EQ(0, texp_rw(ctl, dbuf, 1, 0, p, 64 * KiB));
	ASSERT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, true, fd, 2, 0,
					      64 * KiB, 0));
	EXPECT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, false, fd, 2,
					      64 * KiB, 64 * KiB, 0));
	EXPECT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0,
					      128 * KiB, 0));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0,
						 64 * KiB, 64 * KiB));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0,
						 128 * KiB, 512 * KiB));
	/* a read that ends at EOF in a hole needs no zeroes: nothing to fill */
	ASSERT_EQ(0, ftruncate(fd, 64 * KiB));
	EXPECT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0,
					      128 * KiB, 0));
	free(p);
	dmabufrw_unregister_slot(&self->ring, 2);
	close(fd);
	close(dbuf);
	close(ctl);
	unlink(path);
}

/*
 * A file on ext4 or XFS and device memory (a test-exporter buffer in the
 * ivshmem BAR, no struct pages): random transfers at queue depths 1 to 64
 * from the BAR into a new file and back into the BAR, checked through the
 * exporter's CPU access to the BAR and a buffered pread of the file.  The
 * CPU cannot zero device memory that has no kernel mapping: a read that
 * reaches a hole ends short there and one that starts in it fails with
 * EOPNOTSUPP, the BAR past the data untouched.  On the root bus, where
 * peer-to-peer DMA is refused, the registration fails with EOPNOTSUPP;
 * so it does on md RAID0, whose members are all on the root bus.
 */
TEST_F(files, device_memory_moves_to_and_from_files_and_holes_stay_untouched)
{
	const unsigned int qds[] = { 1, 8, 64 }, n = 16, slot = 256 * KiB;
	const size_t size = n * slot;
	const char *path = fpath(self->dir, "devmem");
	struct fixed_io x[16];
	int ctl, dbuf, fd, ret;
	unsigned int q, i;
	void *buf;
	bool p2p;

	REQUIRE_DEVMEM(p2p);
	/* the member controllers sit on the root bus: no peer-to-peer */
	if (variant->raid0)
		p2p = false;
	ctl = texp_open();
	ASSERT_LE(0, ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-ctl));
	dbuf = texp_create(ctl, size, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, dbuf) TH_LOG("device-memory buffer: %s", strerror(-dbuf));
	fd = new_file(self->dir, "devmem");
	ASSERT_LE(0, fd);
	ret = dmabufrw_register_dmabuf(&self->ring, 2, dbuf, fd);
	if (!p2p) {
		EXPECT_EQ(-EOPNOTSUPP, ret);
		goto out;
	}
	ASSERT_EQ(0, ret) TH_LOG("register: %s", strerror(-ret));
	buf = malloc(size);
	ASSERT_NE(NULL, buf);
	srandom(0xde7e);
	for (q = 0; q < 3; q++) {
		uint64_t seed = 0xde7f11e0 + q;

		random_transfers(x, n, slot, q);
		for (i = 0; i < n; i++)
			pattern_fill(buf + x[i].buf_off, x[i].len, seed, x[i].off);
		ASSERT_EQ(0, texp_rw(ctl, dbuf, 1, 0, buf, size));
		ASSERT_EQ(0, fixed_io_batch(&self->ring, true, fd, 2, x, n, qds[q]));
		memset(buf, 0xee, size);
		ASSERT_EQ(0, texp_rw(ctl, dbuf, 1, 0, buf, size));
		ASSERT_EQ(0, fixed_io_batch(&self->ring, false, fd, 2, x, n, qds[q]));
		ASSERT_EQ(0, texp_rw(ctl, dbuf, 0, 0, buf, size));
		for (i = 0; i < n; i++) {
			EXPECT_EQ(-1, pattern_check(buf + x[i].buf_off, x[i].len,
						    seed, x[i].off))
				TH_LOG("BAR: qd %u transfer %u", qds[q], i);
			EXPECT_EQ(-1, file_check(path, x[i].off, x[i].len, seed))
				TH_LOG("file: qd %u transfer %u", qds[q], i);
		}
	}

	/* 64 KiB of data at 0, then a hole to EOF at 1 MiB */
	ASSERT_EQ(0, ftruncate(fd, 0));
	ASSERT_EQ(0, pattern_fill_fd(fd, 0, 64 * KiB, 0x401e, 0));
	ASSERT_EQ(0, ftruncate(fd, MiB));
	memset(buf, 0xee, size);
	ASSERT_EQ(0, texp_rw(ctl, dbuf, 1, 0, buf, size));
	EXPECT_EQ(64 * KiB, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0,
					      256 * KiB, 0));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->ring, false, fd, 2,
						 256 * KiB, 256 * KiB, 64 * KiB));
	ASSERT_EQ(0, texp_rw(ctl, dbuf, 0, 0, buf, size));
	EXPECT_EQ(-1, pattern_check(buf, 64 * KiB, 0x401e, 0));
	EXPECT_EQ(-1, first_not(buf + 64 * KiB, size - 64 * KiB, 0xee));
	free(buf);
	dmabufrw_unregister_slot(&self->ring, 2);
out:
	close(fd);
	close(dbuf);
	close(ctl);
	unlink(path);
}

/* A WRITE_FIXED with RWF_* flags (@rw_flags), waited for: its result. */
static int write_fixed_flags(struct io_uring *ring, int fd, unsigned int idx,
			     uint64_t addr, unsigned int len, uint64_t off,
			     int rw_flags)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int ret;

	if (!sqe)
		return -EBUSY;
	io_uring_prep_write_fixed(sqe, fd, (void *)(uintptr_t)addr, len, off, idx);
	sqe->rw_flags = rw_flags;
	ret = io_uring_submit_and_wait(ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret;
}

/*
 * Reads across EOF return exactly the bytes before it; writes past EOF and
 * O_APPEND writes extend the file, RWF_DSYNC ones (FUA or a flush at
 * completion) too.
 */
TEST_F(files, eof_reads_are_short_and_writes_extend_the_file)
{
	const char *path = fpath(self->dir, "eof");
	struct stat st;
	int fd, afd;

	fd = new_file(self->dir, "eof");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(self, fd));
	pattern_fill(self->umap, 64 * KiB, 0xe0f, 0);
	ASSERT_EQ(16 * KiB, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					      16 * KiB, 0));
	ASSERT_EQ(0, ftruncate(fd, 10000));
	EXPECT_EQ(10000, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0,
					   16 * KiB, 0));
	EXPECT_EQ(10000 - 8192, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0,
						  8 * KiB, 8192));
	EXPECT_EQ(0, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, 4 * KiB,
				       12 * KiB));
	EXPECT_EQ(-1, heap_check(self, 0, 10000 - 8192, 0xe0f, 8192));

	/* a write past EOF leaves a hole and moves EOF */
	EXPECT_EQ(8 * KiB, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					     8 * KiB, MiB));
	ASSERT_EQ(0, fstat(fd, &st));
	EXPECT_EQ(MiB + 8 * KiB, st.st_size);

	/* appends, through another file of the same registration */
	afd = open(path, O_RDWR | O_APPEND | O_DIRECT);
	ASSERT_LE(0, afd);
	EXPECT_EQ(8 * KiB, dmabufrw_rw_fixed(&self->ring, true, afd, 0,
					     16 * KiB, 8 * KiB, 0));
	EXPECT_EQ(8 * KiB, dmabufrw_rw_fixed(&self->ring, true, afd, 0,
					     24 * KiB, 8 * KiB, 0));
	ASSERT_EQ(0, fstat(fd, &st));
	EXPECT_EQ(MiB + 24 * KiB, st.st_size);
	EXPECT_EQ(-1, file_check_at(path, MiB + 8 * KiB, 16 * KiB, 0xe0f,
				    16 * KiB));

	/* data sync: an overwrite (FUA) and an extending append */
	EXPECT_EQ(4 * KiB, write_fixed_flags(&self->ring, fd, 0, 32 * KiB,
					     4 * KiB, 0, RWF_DSYNC));
	EXPECT_EQ(4 * KiB, write_fixed_flags(&self->ring, afd, 0, 36 * KiB,
					     4 * KiB, 0, RWF_DSYNC));
	ASSERT_EQ(0, fstat(fd, &st));
	EXPECT_EQ(MiB + 28 * KiB, st.st_size);
	EXPECT_EQ(-1, file_check_at(path, 0, 4 * KiB, 0xe0f, 32 * KiB));
	EXPECT_EQ(-1, file_check_at(path, MiB + 24 * KiB, 4 * KiB, 0xe0f,
				    36 * KiB));
	close(afd);
	close(fd);
	unlink(path);
}

/*
 * One registration, made with one file, serves direct I/O on every regular
 * file of that file system (100 files, interleaved); a file of the other
 * file system, the raw namespace the file system is on and a tmpfs file
 * are refused with EBADF.
 */
TEST_F(files, one_registration_serves_every_file_of_the_file_system)
{
	const unsigned int nr = 100, len = 8 * KiB;
	int fds[100], fd, raw, i;
	char name[32];

	for (i = 0; i < (int)nr; i++) {
		snprintf(name, sizeof(name), "many-%d", i);
		fds[i] = new_file(self->dir, name);
		ASSERT_LE(0, fds[i]);
	}
	ASSERT_EQ(0, register_pair(self, fds[0]));
	/* interleaved: each round writes a block of every file */
	for (int round = 0; round < 2; round++)
		for (i = 0; i < (int)nr; i++) {
			uint64_t boff = (i * 2 + round) * len;

			pattern_fill(self->umap + boff, len, i, round * len);
			ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true,
					fds[i], 0, boff, len, round * len));
		}
	heap_fill(self, 0xee);
	for (i = nr - 1; i >= 0; i--)
		ASSERT_EQ(2 * (int)len, dmabufrw_rw_fixed(&self->ring, false,
					fds[i], 1, i * 2 * len, 2 * len, 0));
	for (i = 0; i < (int)nr; i++) {
		snprintf(name, sizeof(name), "many-%d", i);
		EXPECT_EQ(-1, heap_check(self, i * 2 * len, 2 * len, i, 0))
			TH_LOG("file %d", i);
		EXPECT_EQ(-1, file_check(fpath(self->dir, name), 0, 2 * len, i))
			TH_LOG("file %d", i);
	}

	fd = new_file(self->other, "not-mine");
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0, len, 0));
	close(fd);
	raw = open(self->fsdev, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, raw);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, false, raw, 1, 0, len, 0));
	close(raw);
	fd = open("/tmp/not-mine", O_RDWR | O_CREAT | O_DIRECT, 0600);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, len, 0));
	close(fd);
	unlink("/tmp/not-mine");

	for (i = 0; i < (int)nr; i++) {
		snprintf(name, sizeof(name), "many-%d", i);
		close(fds[i]);
		unlink(fpath(self->dir, name));
	}
}

/*
 * A directory stands for its file system: a registration made with one
 * (open for reading only and without O_DIRECT, as directories are) serves
 * both directions on the regular files below it and beside it; each
 * file's own open mode and O_DIRECT still apply; the directory itself,
 * files of another file system and the device under the file system are
 * refused with EBADF; made on a read-only mount, the registration serves
 * reads only, also once the mount is writable again (EINVAL); and a
 * directory of a file system without dma-buf I/O (EOPNOTSUPP) or an
 * O_PATH one (EBADF) cannot be registered.
 */
TEST_F(files, a_directory_registration_serves_every_file_of_the_file_system)
{
	const unsigned int len = 64 * KiB;
	char sub[64];
	struct statfs sfs;
	int dirfd, a, b, fd;

	snprintf(sub, sizeof(sub), "%s/sub", self->dir);
	ASSERT_TRUE(!mkdir(sub, 0700) || errno == EEXIST);
	dirfd = open(sub, O_RDONLY | O_DIRECTORY);
	ASSERT_LE(0, dirfd);
	ASSERT_EQ(0, register_pair(self, dirfd));
	a = new_file(sub, "a");
	ASSERT_LE(0, a);
	b = new_file(self->dir, "beside");
	ASSERT_LE(0, b);

	pattern_fill(self->umap, len, 7, 0);
	pattern_fill(self->umap + len, len, 8, 0);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, a, 0, 0, len, 0));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, b, 0, len, len, 0));
	heap_fill(self, 0xee);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, a, 1, 0, len, 0));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, b, 1, len, len, 0));
	EXPECT_EQ(-1, heap_check(self, 0, len, 7, 0));
	EXPECT_EQ(-1, heap_check(self, len, len, 8, 0));
	EXPECT_EQ(-1, file_check(fpath(sub, "a"), 0, len, 7));
	EXPECT_EQ(-1, file_check(fpath(self->dir, "beside"), 0, len, 8));

	/* the file's own mode and O_DIRECT */
	fd = open(fpath(sub, "a"), O_RDONLY | O_DIRECT);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0, len, 0));
	close(fd);
	fd = open(fpath(sub, "a"), O_RDWR);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, len, 0));
	close(fd);
	EXPECT_EQ(-1, file_check(fpath(sub, "a"), 0, len, 7));
	/* the directory itself, a file of the other file system, the device */
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, false, dirfd, 1, 0, len, 0));
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, true, dirfd, 0, 0, len, 0));
	fd = new_file(self->other, "not-mine");
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0, len, 0));
	close(fd);
	unlink(fpath(self->other, "not-mine"));
	fd = open(self->fsdev, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0, len, 0));
	close(fd);
	close(dirfd);
	close(a);
	close(b);

	/* made on a read-only mount: reads only, whatever the mount is later */
	ASSERT_EQ(0, mount(NULL, self->dir, NULL, MS_REMOUNT | MS_RDONLY, NULL))
		TH_LOG("remount read-only: %s", strerror(errno));
	dirfd = open(sub, O_RDONLY | O_DIRECTORY);
	ASSERT_LE(0, dirfd);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 2, self->ubuf, dirfd));
	close(dirfd);
	ASSERT_EQ(0, mount(NULL, self->dir, NULL, MS_REMOUNT, NULL))
		TH_LOG("remount read-write: %s", strerror(errno));
	fd = open(fpath(sub, "a"), O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	memset(self->umap, 0x77, len);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, fd, 2, 0, len, 0));
	memset(self->umap, 0, len);
	EXPECT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, fd, 2, 0, len, 0));
	EXPECT_EQ(-1, pattern_check(self->umap, len, 7, 0));
	close(fd);
	EXPECT_EQ(-1, file_check(fpath(sub, "a"), 0, len, 7));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 2));

	/* tmpfs has no dma-buf I/O; an O_PATH descriptor is no open file */
	fd = open("/tmp", O_RDONLY | O_DIRECTORY);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, fstatfs(fd, &sfs));
	if (sfs.f_type == TMPFS_MAGIC) {
		EXPECT_EQ(-EOPNOTSUPP, dmabufrw_register_dmabuf(&self->ring, 2,
								self->ubuf, fd));
	} else {
		TH_LOG("/tmp is not tmpfs: its refusal not checked");
	}
	close(fd);
	fd = open(sub, O_PATH | O_DIRECTORY);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBADF, dmabufrw_register_dmabuf(&self->ring, 2, self->ubuf, fd));
	close(fd);

	unlink(fpath(sub, "a"));
	unlink(fpath(self->dir, "beside"));
	EXPECT_EQ(0, rmdir(sub));
}

/*
 * The target of a registration may go away: unlinked and closed, it stays
 * referenced by the registration, which goes on serving the file system's
 * other files, old and new, with the right data.
 */
TEST_F(files, an_unlinked_target_keeps_serving_the_other_files)
{
	const unsigned int len = 128 * KiB;
	int target, old, young;

	target = new_file(self->dir, "gone");
	ASSERT_LE(0, target);
	old = new_file(self->dir, "old");
	ASSERT_LE(0, old);
	ASSERT_EQ(0, register_pair(self, target));
	ASSERT_EQ(0, unlink(fpath(self->dir, "gone")));
	close(target);
	young = new_file(self->dir, "young");
	ASSERT_LE(0, young);

	pattern_fill(self->umap, len, 21, 0);
	pattern_fill(self->umap + len, len, 22, 4 * KiB);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, old, 0, 0, len, 0));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, young, 0, len, len,
					      4 * KiB));
	heap_fill(self, 0xee);
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, old, 1, 0, len, 0));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, young, 1, len, len,
					      4 * KiB));
	EXPECT_EQ(-1, heap_check(self, 0, len, 21, 0));
	EXPECT_EQ(-1, heap_check(self, len, len, 22, 4 * KiB));
	EXPECT_EQ(-1, file_check(fpath(self->dir, "old"), 0, len, 21));
	EXPECT_EQ(-1, file_check(fpath(self->dir, "young"), 4 * KiB, len, 22));

	close(old);
	close(young);
	unlink(fpath(self->dir, "old"));
	unlink(fpath(self->dir, "young"));
}

/* What races the I/O of the race test: punch, fallocate, truncate. */
struct racer {
	int fd;
	size_t size;
	volatile bool stop;
	unsigned long ops;
	int err;
};

static void *race_file(void *arg)
{
	struct racer *r = arg;
	unsigned int seed = 0xace;

	while (!r->stop) {
		off_t off = (rand_r(&seed) % (r->size / (64 * KiB))) * 64 * KiB;
		int ret = 0;

		switch (rand_r(&seed) % 3) {
		case 0:
			ret = fallocate(r->fd, FALLOC_FL_PUNCH_HOLE |
					FALLOC_FL_KEEP_SIZE, off, 64 * KiB);
			break;
		case 1:
			ret = fallocate(r->fd, 0, off, 64 * KiB);
			break;
		case 2:
			ret = ftruncate(r->fd, off) ?: ftruncate(r->fd, r->size);
			break;
		}
		if (ret && !r->err)
			r->err = errno;
		r->ops++;
	}
	return NULL;
}

/*
 * Reads and writes of a file at queue depth 16 race hole punching,
 * preallocation and truncation of it: every I/O completes, every read
 * finds in each block either zeroes or the data written there (never
 * another block's, never another file's, never freed blocks' stale
 * contents), and an unlinked file keeps serving its open descriptor.
 */
TEST_F(files, truncate_punch_and_fallocate_race_io_in_flight)
{
	const size_t size = 4 * MiB, chunk = 64 * KiB;
	const unsigned int qd = 16, rounds = 600;
	const uint64_t seed = 0x4ace;
	const char *path = fpath(self->dir, "race");
	unsigned int sub = 0, done = 0, inflight = 0, bad = 0, errs = 0;
	uint64_t pos_of[16];
	bool read_of[16], busy[16] = { false };
	struct racer r = { .size = size };
	struct io_uring_cqe *cqe;
	pthread_t t;
	int fd;

	fd = new_file(self->dir, "race");
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(self, fd));
	/* the udmabuf holds the pattern of the whole file, by file position */
	pattern_fill(self->umap, size, seed, 0);
	ASSERT_EQ((int)size, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					       size, 0));
	ASSERT_EQ(0, unlink(path));	/* the open file goes on */
	r.fd = fd;
	ASSERT_EQ(0, pthread_create(&t, NULL, race_file, &r));
	srandom(0x4ace);
	while (done < rounds) {
		while (sub < rounds && inflight < qd) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
			unsigned int i;
			uint64_t pos;

			if (!sqe)
				break;
			for (i = 0; busy[i]; i++)
				;
			pos = (random() % (size / chunk)) * chunk;
			read_of[i] = random() % 2;
			pos_of[i] = pos;
			busy[i] = true;
			if (read_of[i])
				io_uring_prep_read_fixed(sqe, fd,
					(void *)(uintptr_t)(i * chunk), chunk,
					pos, 1);
			else
				io_uring_prep_write_fixed(sqe, fd,
					(void *)(uintptr_t)pos, chunk, pos, 0);
			sqe->user_data = i;
			sub++;
			inflight++;
		}
		ASSERT_LE(0, io_uring_submit_and_wait(&self->ring, 1));
		while (io_uring_peek_cqe(&self->ring, &cqe) == 0) {
			unsigned int i = cqe->user_data;
			int res = cqe->res;

			io_uring_cqe_seen(&self->ring, cqe);
			busy[i] = false;
			inflight--;
			done++;
			/* a read past a truncation ends short; nothing fails */
			if (res < 0 || (!read_of[i] && res != (int)chunk)) {
				if (!errs++)
					TH_LOG("%s at %llu: %d", read_of[i] ?
					       "read" : "write",
					       (unsigned long long)pos_of[i], res);
				continue;
			}
			if (!read_of[i])
				continue;
			dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
			for (int b = 0; b < res / 4096; b++) {
				const void *p = self->hmap + i * chunk + b * 4096;
				uint64_t at = pos_of[i] + b * 4096;

				if (first_not(p, 4096, 0) != -1 &&
				    pattern_check(p, 4096, seed, at) != -1 &&
				    !bad++)
					TH_LOG("read at %llu: block %d is neither zeroes nor its data",
					       (unsigned long long)pos_of[i], b);
			}
			dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
		}
	}
	r.stop = true;
	pthread_join(t, NULL);
	EXPECT_EQ(0, errs);
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, r.err) TH_LOG("racer: %s", strerror(r.err));
	EXPECT_LT(50, r.ops) TH_LOG("only %lu racing operations", r.ops);
	close(fd);
}

/* The bytes of @path, compared with @len bytes of @expect. */
static bool file_is(const char *path, const void *expect, size_t len)
{
	char *buf = malloc(len + 1);
	int fd = open(path, O_RDONLY);
	bool same = false;

	if (buf && fd >= 0)
		same = pread(fd, buf, len + 1, 0) == (ssize_t)len &&
		       !memcmp(buf, expect, len);
	if (fd >= 0)
		close(fd);
	free(buf);
	return same;
}

/*
 * Misaligned offsets and lengths fail with EINVAL, a file not open for
 * direct I/O with EINVAL, and nothing of the file changes.
 */
TEST_F(files, misaligned_or_buffered_io_fails_with_einval)
{
	const char *path = fpath(self->dir, "refuse");
	static char old[16 * KiB];
	int fd, bfd;

	memset(old, 0x3c, sizeof(old));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT_LE(0, fd);
	ASSERT_EQ((ssize_t)sizeof(old), write(fd, old, sizeof(old)));
	ASSERT_EQ(0, fsync(fd));
	close(fd);
	fd = open(path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(self, fd));
	memset(self->umap, 0x5a, 64 * KiB);

	/* file offset, length, dma-buf offset */
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0,
					     4 * KiB, 100));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 0, 100, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, fd, 0, 2,
					     4 * KiB, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, fd, 1, 0,
					     4 * KiB, 100));
	/* a file of the file system without O_DIRECT: no buffered copy */
	bfd = open(path, O_RDWR);
	ASSERT_LE(0, bfd);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, bfd, 0, 0,
					     4 * KiB, 0));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, bfd, 1, 0,
					     4 * KiB, 0));
	close(bfd);

	/*
	 * Registrations made with a read-only and a write-only target are
	 * mapped for one direction: another file's I/O in the other one is
	 * refused before the file system does anything, even where the CPU
	 * alone would serve it (a hole's zeroes).
	 */
	ASSERT_EQ(0, ftruncate(fd, sizeof(old) + 64 * KiB));
	bfd = open(path, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, bfd);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 2, self->ubuf, bfd));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, true, fd, 2, 0,
					     4 * KiB, 0));
	close(bfd);
	bfd = open(path, O_WRONLY | O_DIRECT);
	ASSERT_LE(0, bfd);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 3, self->heap, bfd));
	heap_fill(self, 0xee);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, fd, 3, 0,
					     4 * KiB, sizeof(old)));
	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
	EXPECT_EQ(-1, first_not(self->hmap, 4 * KiB, 0xee));
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	close(bfd);
	ASSERT_EQ(0, ftruncate(fd, sizeof(old)));
	EXPECT_TRUE(file_is(path, old, sizeof(old)));
	close(fd);
	unlink(path);
}

/*
 * ext4 files whose data the CPU would copy are refused with EOPNOTSUPP and
 * keep their bytes: inline data, and every file of a data=journal mount.
 */
/*
 * Write @len bytes of @old to a new @path with buffered I/O, register the
 * fixture's buffers with it open for direct I/O, and expect dma-buf reads
 * and writes of it to fail with EOPNOTSUPP and leave its bytes alone.
 */
static void expect_refused_file(struct __test_metadata *_metadata,
				FIXTURE_DATA(files) *f, const char *path,
				const char *old, size_t len)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	ASSERT_LE(0, fd);
	ASSERT_EQ((ssize_t)len, write(fd, old, len));
	ASSERT_EQ(0, fsync(fd));
	close(fd);
	fd = open(path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, register_pair(f, fd));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&f->ring, false, fd, 1, 0,
						 4 * KiB, 0));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&f->ring, true, fd, 0, 0,
						 4 * KiB, 0));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&f->ring, 0));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&f->ring, 1));
	close(fd);
	EXPECT_TRUE(file_is(path, old, len));
	unlink(path);
}

/* The modes of ext4 alone, on the same set-up as the files tests. */
FIXTURE(ext4_modes) {
	FIXTURE_DATA(files) f;
};

FIXTURE_SETUP(ext4_modes)
{
	REQUIRE_DMABUF_IO();
	fs_env_setup(_metadata, &self->f, true, false);
}

FIXTURE_TEARDOWN(ext4_modes)
{
	fs_env_teardown(_metadata, &self->f);
}

TEST_F(ext4_modes, inline_and_journalled_files_fail_with_eopnotsupp)
{
	FIXTURE_DATA(files) *f = &self->f;
	const char *ipath = fpath(f->dir, "inline");
	const char *jpath = fpath(f->dir, "journalled");
	static char old[8 * KiB];
	int ret;

	memset(old, 0x6b, sizeof(old));
	memset(f->umap, 0x5a, 64 * KiB);

	/* 50 bytes fit in the inode (mkfs -O inline_data) */
	expect_refused_file(_metadata, f, ipath, old, 50);

	/* data=journal: every write goes through the journal, by the CPU */
	ASSERT_EQ(0, umount_busy(EXT4_MNT));
	ret = mount_ns(3, 1, "ext4", EXT4_MNT, "data=journal");
	ASSERT_EQ(0, ret) TH_LOG("mount data=journal: %s", strerror(-ret));
	expect_refused_file(_metadata, f, jpath, old, sizeof(old));
}

TEST_HARNESS_MAIN
