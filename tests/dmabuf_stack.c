// SPDX-License-Identifier: GPL-2.0
/*
 * Stacked block devices over the test VM's member controllers: md RAID0
 * and RAID1, dm-linear and dm-striped, and an NVMe multipath head of two
 * controllers (tests/stack.h, scripts/run-vm).
 *
 * First, that the rig is what the stacking work relies on: each stack puts
 * the bytes written through it where its layout says, on each member, as
 * read back from the members themselves; the multipath head serves I/O over
 * either path and survives losing one.  Then dma-buf I/O through each
 * stack, checked in the buffers, through the stacked device and on the
 * members; and each refused stack with its errno, nothing registered.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/fs.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "stack.h"
#include "dmabufrw.h"

#define KiB	1024UL
#define MiB	(1024UL * 1024)

#define CHUNK	(64 * KiB)

/* A 1 MiB udmabuf, mapped, and a ring with one empty buffer slot. */
struct one_buf {
	struct io_uring ring;
	int ubuf, memfd;
	void *map;
};

/*
 * What a test builds lives here, for the teardown to unwind when the test
 * fails half-way: its array and device-mapper devices, the stacked device
 * it opened, its buffer; and controllers it took off the bus and members
 * it partitioned are put back.
 */
FIXTURE(stack)
{
	dev_t member[STACK_MEMBERS];
	int fd[STACK_MEMBERS];
	struct md_array md;
	struct dm_dev dm[2];	/* dm[1] may be stacked on dm[0] */
	int dev;
	struct one_buf b;
};

FIXTURE_SETUP(stack)
{
	int i;

	self->md.fd = self->dev = self->b.ubuf = -1;
	self->dm[0].devt = self->dm[1].devt = 0;
	for (i = 0; i < STACK_MEMBERS; i++) {
		self->fd[i] = -1;
		self->member[i] = member_devt(i);
		if (!self->member[i])
			SKIP(return, "no member controller %d (scripts/run-vm test mode)", i);
	}
	if (access("/sys/module/md_mod/parameters/new_array", W_OK) ||
	    access("/dev/mapper/control", R_OK | W_OK))
		SKIP(return, "the kernel has no md or device-mapper (CONFIG_BLK_DEV_MD, CONFIG_BLK_DEV_DM)");
	for (i = 0; i < STACK_MEMBERS; i++) {
		char name[32], path[64];

		member_name(i, name, sizeof(name));
		snprintf(path, sizeof(path), "/dev/%s", name);
		self->fd[i] = open(path, O_RDWR | O_DIRECT);
		ASSERT_LE(0, self->fd[i]) TH_LOG("%s: %s", path, strerror(errno));
	}
}

static void one_buf_exit(struct one_buf *b);
static int member_rescan(int i);
static int member_partition(int i, dev_t *part);
static int mpath_paths(void);
static int mpath_rescan(void);

FIXTURE_TEARDOWN(stack)
{
	char name[32], path[64];
	int i;

	if (self->dev >= 0)
		close(self->dev);
	one_buf_exit(&self->b);
	/* the ring's registrations go with its exit work; top down */
	EXPECT_EQ(0, md_stop(&self->md));
	EXPECT_EQ(0, dm_remove(&self->dm[1]));
	EXPECT_EQ(0, dm_remove(&self->dm[0]));
	for (i = 0; i < STACK_MEMBERS; i++)
		if (self->fd[i] >= 0)
			close(self->fd[i]);
	for (i = 0; i < STACK_MEMBERS; i++) {
		if (!member_devt(i))
			EXPECT_EQ(0, member_rescan(i));
		member_name(i, name, sizeof(name));
		snprintf(path, sizeof(path), "/dev/%sp1", name);
		if (blk_devt(path))
			EXPECT_EQ(0, member_partition(i, NULL));
	}
	if (mpath_paths() < 2)
		EXPECT_EQ(0, mpath_rescan());
}

/*
 * The pattern of @seed at @off of a device whose offset 0 is at @at of an
 * array striped over the @n devices @fds in chunks of CHUNK, from their
 * start: each chunk is on device (chunk % n) at (chunk / n) * CHUNK.
 * Checks @len bytes; the first bad offset, or -1.
 */
static long check_striped(const int *fds, int n, uint64_t at, uint64_t off,
			  size_t len, uint64_t seed)
{
	uint64_t pos;

	for (pos = off + at; pos < off + at + len; pos += CHUNK) {
		uint64_t chunk = pos / CHUNK;
		uint64_t moff = chunk / n * CHUNK + pos % CHUNK;
		size_t part = CHUNK - pos % CHUNK;

		if (part > off + at + len - pos)
			part = off + at + len - pos;
		if (pattern_check_fd(fds[chunk % n], moff, part, seed,
				     pos - at) != -1)
			return pos - at;
	}
	return -1;
}

/* The PCI device of a controller with serial @serial, in @bdf. */
static int ctrl_bdf(const char *serial, char *bdf, size_t size)
{
	char path[300], link[300], buf[64];
	struct dirent *e;
	ssize_t n = -1;
	DIR *d;

	d = opendir("/sys/class/nvme");
	if (!d)
		return -1;
	while ((e = readdir(d)) && n <= 0) {
		snprintf(path, sizeof(path), "/sys/class/nvme/%s/serial", e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 || strcmp(buf, serial))
			continue;
		snprintf(path, sizeof(path), "/sys/class/nvme/%s/device", e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
	}
	closedir(d);
	if (n <= 0)
		return -1;
	link[n] = 0;
	snprintf(bdf, size, "%s", strrchr(link, '/') + 1);
	return 0;
}

/* The paths of the multipath head: disks nvmeXcYnZ under its controllers. */
static int mpath_paths(void)
{
	char path[300], buf[64];
	struct dirent *e, *f;
	int paths = 0, x, y, z;
	DIR *d, *c;

	d = opendir("/sys/class/nvme");
	while (d && (e = readdir(d))) {
		snprintf(path, sizeof(path), "/sys/class/nvme/%s/serial", e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 || strcmp(buf, "dmabufrw-mp"))
			continue;
		snprintf(path, sizeof(path), "/sys/class/nvme/%s", e->d_name);
		c = opendir(path);
		while (c && (f = readdir(c)))
			paths += sscanf(f->d_name, "nvme%dc%dn%d", &x, &y, &z) == 3;
		if (c)
			closedir(c);
	}
	if (d)
		closedir(d);
	return paths;
}

/* The iopolicy attribute of the multipath head's subsystem, in @path. */
static int mpath_iopolicy(char *path, size_t size)
{
	char nqn[256];
	struct dirent *e;
	DIR *d;
	int ret = -1;

	d = opendir("/sys/class/nvme-subsystem");
	while (d && ret && (e = readdir(d))) {
		snprintf(path, size, "/sys/class/nvme-subsystem/%s/subsysnqn",
			 e->d_name);
		if (read_text(path, nqn, sizeof(nqn)) < 0 ||
		    !strstr(nqn, "dmabufrw-mp"))
			continue;
		snprintf(path, size, "/sys/class/nvme-subsystem/%s/iopolicy",
			 e->d_name);
		ret = 0;
	}
	if (d)
		closedir(d);
	return ret;
}

/* Rescan the PCI bus and wait up to 20 s for both paths: 0 or -1. */
static int mpath_rescan(void)
{
	if (write_text("/sys/bus/pci/rescan", "1"))
		return -1;
	for (int i = 0; i < 200; i++) {
		if (mpath_paths() == 2)
			return 0;
		usleep(100000);
	}
	return -1;
}

/* What the rig gives the stacking tests: four members and a two-path head. */
TEST_F(stack, members_and_multipath_head_are_present)
{
	char head[32];
	uint64_t size;
	int i;

	for (i = 0; i < STACK_MEMBERS; i++) {
		ASSERT_EQ(0, ioctl(self->fd[i], BLKGETSIZE64, &size));
		EXPECT_LE(16 * MiB, size);
	}
	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head) TH_LOG("no multipath head (CONFIG_NVME_MULTIPATH?)");
	EXPECT_EQ(2, mpath_paths());
}

/* md RAID0 puts chunk k of the array on member k % 4. */
TEST_F(stack, md_raid0_places_each_chunk_on_its_member)
{

	ASSERT_EQ(0, md_create(&self->md, 0, self->member, STACK_MEMBERS, CHUNK));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	/* 4 MiB at 1.5 chunks in: partial chunks at both ends */
	ASSERT_EQ(0, pattern_fill_fd(self->dev, CHUNK + CHUNK / 2, 4 * MiB, 11,
				     CHUNK + CHUNK / 2));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, CHUNK + CHUNK / 2, 4 * MiB, 11,
				       CHUNK + CHUNK / 2));
	EXPECT_EQ(-1, check_striped(self->fd, STACK_MEMBERS, 0,
				    CHUNK + CHUNK / 2, 4 * MiB, 11));
	close(self->dev);
	self->dev = -1;
	EXPECT_EQ(0, md_stop(&self->md));
}

/* md RAID1 writes both legs, from their first sector. */
TEST_F(stack, md_raid1_writes_both_legs)
{

	ASSERT_EQ(0, md_create(&self->md, 1, self->member + 2, 2, 0));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, pattern_fill_fd(self->dev, 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[2], 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[3], 3 * MiB, 2 * MiB, 12, 0));
	close(self->dev);
	self->dev = -1;
	EXPECT_EQ(0, md_stop(&self->md));
}

/* dm-linear maps its sectors to the member at the table's offset. */
TEST_F(stack, dm_linear_maps_at_its_offset)
{
	char params[64];

	snprintf(params, sizeof(params), "%u:%u 2048", major(self->member[1]),
		 minor(self->member[1]));
	ASSERT_EQ(0, dm_create(&self->dm[0], "linear", "linear", 8192, params));
	self->dev = open(self->dm[0].path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, pattern_fill_fd(self->dev, 512 * KiB, MiB, 13, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, 512 * KiB, MiB, 13, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[1], MiB + 512 * KiB, MiB, 13, 0));
	close(self->dev);
	self->dev = -1;
	EXPECT_EQ(0, dm_remove(&self->dm[0]));
}

/* dm-striped puts chunk k on member k % 4, as md RAID0 does. */
TEST_F(stack, dm_striped_places_each_chunk_on_its_member)
{
	char params[256];
	int i, len;

	len = snprintf(params, sizeof(params), "%d %lu", STACK_MEMBERS,
		       CHUNK / 512);
	for (i = 0; i < STACK_MEMBERS; i++)
		len += snprintf(params + len, sizeof(params) - len, " %u:%u 0",
				major(self->member[i]), minor(self->member[i]));
	ASSERT_EQ(0, dm_create(&self->dm[0], "striped", "striped",
			       STACK_MEMBERS * 16384, params));
	self->dev = open(self->dm[0].path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, pattern_fill_fd(self->dev, CHUNK / 2, 3 * MiB, 14, CHUNK / 2));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, CHUNK / 2, 3 * MiB, 14, CHUNK / 2));
	EXPECT_EQ(-1, check_striped(self->fd, STACK_MEMBERS, 0, CHUNK / 2,
				    3 * MiB, 14));
	close(self->dev);
	self->dev = -1;
	EXPECT_EQ(0, dm_remove(&self->dm[0]));
}

/*
 * The multipath head serves I/O with one of its controllers removed, and
 * takes the controller back as a path once the bus is rescanned.
 */
TEST_F(stack, multipath_head_serves_io_without_one_path)
{
	char head[32], path[64], bdf[64], remove[128];

	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head);
	snprintf(path, sizeof(path), "/dev/%s", head);
	self->dev = open(path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev) TH_LOG("%s: %s", path, strerror(errno));
	ASSERT_EQ(0, pattern_fill_fd(self->dev, 0, MiB, 15, 0));

	ASSERT_EQ(0, ctrl_bdf("dmabufrw-mp", bdf, sizeof(bdf)));
	snprintf(remove, sizeof(remove), "/sys/bus/pci/devices/%s/remove", bdf);
	ASSERT_EQ(0, write_text(remove, "1"));
	EXPECT_EQ(1, mpath_paths());

	EXPECT_EQ(-1, pattern_check_fd(self->dev, 0, MiB, 15, 0));
	ASSERT_EQ(0, pattern_fill_fd(self->dev, MiB, MiB, 16, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, MiB, MiB, 16, 0));

	EXPECT_EQ(0, mpath_rescan()) TH_LOG("the removed path did not come back");
	EXPECT_EQ(-1, pattern_check_fd(self->dev, 0, MiB, 15, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, MiB, MiB, 16, 0));
	close(self->dev);
}

static void one_buf_init(struct __test_metadata *_metadata, struct one_buf *b)
{
	b->ubuf = dmabufrw_alloc_udmabuf(MiB, &b->memfd);
	ASSERT_LE(0, b->ubuf);
	b->map = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, b->memfd, 0);
	ASSERT_NE(MAP_FAILED, b->map);
	ASSERT_EQ(0, io_uring_queue_init(8, &b->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&b->ring, 1));
}

static void one_buf_exit(struct one_buf *b)
{
	if (b->ubuf < 0)
		return;
	io_uring_queue_exit(&b->ring);
	munmap(b->map, MiB);
	close(b->ubuf);
	close(b->memfd);
	b->ubuf = -1;
}

/*
 * A dma-buf registration with the stacked device @path as target: @err,
 * and the slot stays empty.
 */
static void expect_refused(struct __test_metadata *_metadata,
			   struct io_uring *ring, int ubuf, const char *path,
			   int err)
{
	int fd = open(path, O_RDWR | O_DIRECT);

	ASSERT_LE(0, fd) TH_LOG("%s: %s", path, strerror(errno));
	EXPECT_EQ(err, dmabufrw_register_dmabuf(ring, 0, ubuf, fd))
		TH_LOG("%s", path);
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(ring, false, fd, 0, 0, 4096, 0));
	close(fd);
}

/*
 * Stacks whose I/O the CPU would have to touch are refused at
 * registration with EOPNOTSUPP, the errno of a device that cannot do
 * dma-buf I/O, and nothing is registered: an md RAID5 array (the CPU
 * computes its parity), a dm-zero device (its target fills reads with
 * the CPU), and a dm-linear device over one, whose member refuses.
 */
TEST_F(stack, registration_on_stacks_the_cpu_would_touch_is_refused)
{
	char params[64];

	one_buf_init(_metadata, &self->b);

	ASSERT_EQ(0, md_create(&self->md, 5, self->member, 3, CHUNK));
	expect_refused(_metadata, &self->b.ring, self->b.ubuf, self->md.path, -EOPNOTSUPP);
	EXPECT_EQ(0, md_stop(&self->md));

	ASSERT_EQ(0, dm_create(&self->dm[0], "zero", "zero", 2048, ""));
	expect_refused(_metadata, &self->b.ring, self->b.ubuf, self->dm[0].path, -EOPNOTSUPP);
	snprintf(params, sizeof(params), "%u:%u 0", major(self->dm[0].devt),
		 minor(self->dm[0].devt));
	ASSERT_EQ(0, dm_create(&self->dm[1], "linear", "linear", 2048, params));
	expect_refused(_metadata, &self->b.ring, self->b.ubuf, self->dm[1].path, -EOPNOTSUPP);
	EXPECT_EQ(0, dm_remove(&self->dm[1]));
	EXPECT_EQ(0, dm_remove(&self->dm[0]));

	one_buf_exit(&self->b);
}

/*
 * A registration outlives the table it was made with.  A dm-linear device
 * over member 1 takes a registration; then a new table maps it to member
 * 2, which is not part of the registration: I/O fails with EINVAL and
 * moves nothing.  Then a zero table, whose target would fill reads with
 * the CPU: EOPNOTSUPP, nothing moved.  Back on member 1, I/O works again.
 */
TEST_F(stack, io_after_a_table_reload_fails_where_the_registration_cannot_go)
{
	char params[64];

	one_buf_init(_metadata, &self->b);
	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[1]),
		 minor(self->member[1]));
	ASSERT_EQ(0, dm_create(&self->dm[0], "reload", "linear", 2048, params));
	self->dev = open(self->dm[0].path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	pattern_fill(self->b.map, MiB, 21, 0);
	ASSERT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[1], 0, MiB, 21, 0));

	/* member 2 joined after the registration */
	ASSERT_EQ(0, pattern_fill_fd(self->fd[2], 0, MiB, 22, 0));
	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[2]),
		 minor(self->member[2]));
	ASSERT_EQ(0, dm_reload(&self->dm[0], "linear", 2048, params));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[2], 0, MiB, 22, 0));
	memset(self->b.map, 0x5a, MiB);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(0x5a, ((unsigned char *)self->b.map)[0]);

	/* a target the CPU would fill */
	ASSERT_EQ(0, dm_reload(&self->dm[0], "zero", 2048, ""));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(0x5a, ((unsigned char *)self->b.map)[MiB - 1]);

	/* back on the registered member */
	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[1]),
		 minor(self->member[1]));
	ASSERT_EQ(0, dm_reload(&self->dm[0], "linear", 2048, params));
	EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(-1, pattern_check(self->b.map, MiB, 21, 0));

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, dm_remove(&self->dm[0]));
}

/*
 * I/O of random 64 KiB blocks of the first BG_SPAN bytes of @fd at QD 8,
 * through slot 0 of @ring, in a thread until stopped: reads, and with
 * @writes every other I/O a write.  No two I/Os in flight share a block.
 * Each block holds a generation of its pattern: 0, the fill of
 * bg_io_start(), then one more for each write that completed.  A read is
 * checked against its block's generation, so that a write that was lost,
 * or reached one mirror only, shows; bg_io_check_fd() checks a device's
 * copy of the span the same way.  A block whose write failed may hold
 * either generation and is not checked again until written.  A failure
 * with @ok_errno is allowed, any other is counted in bad_errno.
 */
#define BG_SLOT		(64 * KiB)
#define BG_QD		8
#define BG_SPAN		(8 * MiB)
#define BG_BLOCKS	(BG_SPAN / BG_SLOT)
#define BG_SEED		31

struct bg_io {
	struct io_uring ring;
	int fd;
	void *map;
	bool writes;
	int ok_errno;
	volatile int stop;
	unsigned long done, writes_done, failed, bad_errno, data_errors;
	int last_errno;
	unsigned int gen[BG_BLOCKS];	/* of the last completed write */
	bool busy[BG_BLOCKS], unknown[BG_BLOCKS];
	unsigned int block[BG_QD], slot_gen[BG_QD];
};

static uint64_t bg_seed(unsigned int gen)
{
	return BG_SEED + ((uint64_t)gen << 16);
}

/* Queue I/O number @n of the loop, in slot @i of the buffer. */
static void bg_queue(struct bg_io *r, int i, unsigned long n,
		     unsigned int *seed)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	bool write = r->writes && n % 2;
	unsigned int b;
	uint64_t off;

	do
		b = rand_r(seed) % BG_BLOCKS;
	while (r->busy[b]);
	r->busy[b] = true;
	r->block[i] = b;
	off = (uint64_t)b * BG_SLOT;
	if (write) {
		r->slot_gen[i] = r->gen[b] + 1;
		pattern_fill(r->map + i * BG_SLOT, BG_SLOT,
			     bg_seed(r->slot_gen[i]), off);
		dmabufrw_prep_write_dmabuf(sqe, r->fd, 0, i * BG_SLOT, BG_SLOT,
					   off);
	} else {
		dmabufrw_prep_read_dmabuf(sqe, r->fd, 0, i * BG_SLOT, BG_SLOT,
					  off);
	}
	sqe->user_data = i | (uint64_t)write << 32;
}

static void *bg_io_thread(void *arg)
{
	struct bg_io *r = arg;
	unsigned int inflight = 0, seed = 7, b;
	unsigned long n = 0;
	struct io_uring_cqe *cqe;
	bool write;
	int i;

	for (i = 0; i < BG_QD; i++) {
		bg_queue(r, i, n++, &seed);
		inflight++;
	}
	while (inflight) {
		if (io_uring_submit_and_wait(&r->ring, 1) < 0)
			break;
		while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
			i = (uint32_t)cqe->user_data;
			write = cqe->user_data >> 32;
			b = r->block[i];
			if (cqe->res == (int)BG_SLOT) {
				r->done++;
				r->writes_done += write;
				if (write) {
					r->gen[b] = r->slot_gen[i];
					r->unknown[b] = false;
				} else if (!r->unknown[b] &&
					   pattern_check(r->map + i * BG_SLOT,
							 BG_SLOT, bg_seed(r->gen[b]),
							 (uint64_t)b * BG_SLOT) != -1) {
					r->data_errors++;
				}
			} else {
				r->failed++;
				r->last_errno = -cqe->res;
				if (!r->ok_errno || cqe->res != -r->ok_errno)
					r->bad_errno++;
				if (write)
					r->unknown[b] = true;
			}
			r->busy[b] = false;
			io_uring_cqe_seen(&r->ring, cqe);
			inflight--;
			if (r->stop)
				continue;
			bg_queue(r, i, n++, &seed);
			inflight++;
		}
	}
	return NULL;
}

/*
 * The blocks of the loop's span that device @fd, from offset @at, does
 * not hold as the loop last wrote them (after the loop stopped).
 */
static int bg_io_check_fd(const struct bg_io *r, int fd, uint64_t at)
{
	unsigned int b;
	int bad = 0;

	for (b = 0; b < BG_BLOCKS; b++)
		bad += !r->unknown[b] &&
		       pattern_check_fd(fd, at + (uint64_t)b * BG_SLOT, BG_SLOT,
					bg_seed(r->gen[b]),
					(uint64_t)b * BG_SLOT) != -1;
	return bad;
}

/*
 * Fill the loop's span of @r->fd with its pattern, register a udmabuf for
 * @r->fd in slot 0 of a new ring and start the loop in @t.
 */
static void bg_io_start(struct __test_metadata *_metadata, struct bg_io *r,
			int *ubuf, int *memfd, pthread_t *t)
{
	int i;

	for (i = 0; i < (int)(BG_SPAN / MiB); i++)
		ASSERT_EQ(0, pattern_fill_fd(r->fd, i * MiB, MiB, bg_seed(0),
					     i * MiB));
	*ubuf = dmabufrw_alloc_udmabuf(BG_QD * BG_SLOT, memfd);
	ASSERT_LE(0, *ubuf);
	r->map = mmap(NULL, BG_QD * BG_SLOT, PROT_READ | PROT_WRITE, MAP_SHARED,
		      *memfd, 0);
	ASSERT_NE(MAP_FAILED, r->map);
	ASSERT_EQ(0, io_uring_queue_init(2 * BG_QD, &r->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&r->ring, 1));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&r->ring, 0, *ubuf, r->fd));
	ASSERT_EQ(0, pthread_create(t, NULL, bg_io_thread, r));
}

/* Stop the loop, report it and let its ring and buffer go. */
static void bg_io_stop(struct __test_metadata *_metadata, struct bg_io *r,
		       int ubuf, int memfd, pthread_t t, unsigned long before)
{
	r->stop = 1;
	pthread_join(t, NULL);
	TH_LOG("%lu I/Os done and checked (%lu writes; %lu after the event), %lu failed (last errno %d)",
	       r->done, r->writes_done, r->done - before, r->failed,
	       r->last_errno);
	EXPECT_EQ(0, r->data_errors);
	EXPECT_EQ(0, r->bad_errno) TH_LOG("errno %d", r->last_errno);
	EXPECT_LT(before, r->done);
	io_uring_queue_exit(&r->ring);
	munmap(r->map, BG_QD * BG_SLOT);
	close(ubuf);
	close(memfd);
}

/*
 * One path of the multipath head is removed under dma-buf reads at QD 8:
 * the I/O that path had fails over (issued again through the head, down
 * the other path) and every read completes with its data, or fails with
 * ENODEV (the path's controller went away under it), and reads go on
 * over the path left.  The registration is let go before the bus is
 * rescanned, as the controller that comes back is a new path.
 */
TEST_F(stack, multipath_path_removed_under_dmabuf_reads)
{
	char head[32], path[64], bdf[64], remove[128], policy[32] = "";
	struct bg_io r = { .ok_errno = ENODEV };
	char iopolicy[300];
	unsigned long before;
	int ubuf, memfd;
	pthread_t t;

	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head);
	ASSERT_EQ(0, ctrl_bdf("dmabufrw-mp", bdf, sizeof(bdf)));
	/* both paths carry I/O, whichever one goes */
	ASSERT_EQ(0, mpath_iopolicy(iopolicy, sizeof(iopolicy)));
	ASSERT_LT(0, read_text(iopolicy, policy, sizeof(policy)));
	ASSERT_EQ(0, write_text(iopolicy, "round-robin"));
	snprintf(path, sizeof(path), "/dev/%s", head);
	r.fd = open(path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, r.fd);
	bg_io_start(_metadata, &r, &ubuf, &memfd, &t);
	sleep(1);
	snprintf(remove, sizeof(remove), "/sys/bus/pci/devices/%s/remove", bdf);
	EXPECT_EQ(0, write_text(remove, "1"));
	before = r.done;
	sleep(2);
	bg_io_stop(_metadata, &r, ubuf, memfd, t, before);
	/* at most the I/O the removed path had in flight failed */
	EXPECT_GE(BG_QD, r.failed);
	EXPECT_EQ(1, mpath_paths());
	close(r.fd);
	EXPECT_EQ(0, write_text(iopolicy, policy));
	EXPECT_EQ(0, mpath_rescan()) TH_LOG("the removed path did not come back");
}

/* md's sysfs attribute @attr of array @md in @path. */
static void md_attr(const struct md_array *md, const char *attr, char *path,
		    size_t size)
{
	snprintf(path, size, "/sys/block/%s/md/%s", strrchr(md->path, '/') + 1,
		 attr);
}

/* The path of sysfs attribute @attr of member @i in array @md. */
static void md_dev_attr(const struct md_array *md, int i, const char *attr,
			char *path, size_t size)
{
	char name[32];

	member_name(i, name, sizeof(name));
	snprintf(path, size, "/sys/block/%s/md/dev-%s/%s",
		 strrchr(md->path, '/') + 1, name, attr);
}

/*
 * Fail member @i of array @md and take it out, once md lets it go (its
 * pending I/O done): 0 or -errno.
 */
static int md_fail_and_remove(const struct md_array *md, int i, const dev_t *member)
{
	int tries, err;

	if (ioctl(md->fd, SET_DISK_FAULTY, member[i]))
		return -errno;
	for (tries = 0; tries < 100; tries++) {
		if (!ioctl(md->fd, HOT_REMOVE_DISK, member[i]))
			return 0;
		err = -errno;
		usleep(20000);
	}
	return err;
}

/*
 * One leg of an md RAID1 fails, then is removed from the array, under
 * dma-buf reads and writes at QD 8: every I/O completes with its data
 * (a read the failing leg had is read again from the other), and the
 * leg left holds every write.
 */
TEST_F(stack, raid1_serves_dmabuf_io_while_a_leg_fails_and_is_removed)
{
	struct bg_io r = { .writes = true };
	char path[128], text[64];
	unsigned long before;
	int ubuf, memfd, i, err = 0;
	pthread_t t;

	ASSERT_EQ(0, md_create(&self->md, 1, self->member + 2, 2, 0));
	r.fd = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, r.fd);
	bg_io_start(_metadata, &r, &ubuf, &memfd, &t);
	sleep(1);
	before = r.done;
	EXPECT_EQ(0, ioctl(self->md.fd, SET_DISK_FAULTY, self->member[3]))
		TH_LOG("set faulty: %s", strerror(errno));
	sleep(1);
	/* I/O went on after the fault, and goes on after the removal */
	EXPECT_LT(before, r.done);
	/* md lets the leg go once its pending I/O is done */
	for (i = 0; i < 100; i++) {
		if (!ioctl(self->md.fd, HOT_REMOVE_DISK, self->member[3]))
			break;
		err = errno;
		usleep(20000);
	}
	EXPECT_GT(100, i) TH_LOG("hot remove: %s", strerror(err));
	before = r.done;
	sleep(1);
	bg_io_stop(_metadata, &r, ubuf, memfd, t, before);

	md_attr(&self->md, "degraded", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(1, atoi(text));
	EXPECT_EQ(0, bg_io_check_fd(&r, self->fd[2], 0));
	close(r.fd);
	EXPECT_EQ(0, md_stop(&self->md));
}

/* Rescan the PCI bus and wait up to 20 s for member @i: 0 or -1. */
static int member_rescan(int i)
{
	if (write_text("/sys/bus/pci/rescan", "1"))
		return -1;
	for (int k = 0; k < 200; k++) {
		if (member_devt(i))
			return 0;
		usleep(100000);
	}
	return -1;
}

#define PART_START	MiB

/*
 * Give member @i an MBR with one partition from PART_START to its end, and
 * its number in @part; or, with @part NULL, no partition.  0 or -errno.
 */
static int member_partition(int i, dev_t *part)
{
	char name[32], path[64];
	uint64_t size = 0;
	int fd, k, lbs = 512, err = 0;
	uint8_t *mbr;

	member_name(i, name, sizeof(name));
	snprintf(path, sizeof(path), "/dev/%s", name);
	fd = open(path, O_RDWR | O_DIRECT);
	if (fd < 0)
		return -errno;
	if (posix_memalign((void **)&mbr, 4096, 4096)) {
		close(fd);
		return -ENOMEM;
	}
	memset(mbr, 0, 4096);
	if (ioctl(fd, BLKGETSIZE64, &size) || ioctl(fd, BLKSSZGET, &lbs))
		err = -errno;
	if (!err && part) {
		uint32_t start = PART_START / lbs, len = size / lbs - start;

		mbr[446 + 4] = 0x83;		/* Linux */
		memcpy(mbr + 446 + 8, &start, 4);
		memcpy(mbr + 446 + 12, &len, 4);
		mbr[510] = 0x55;
		mbr[511] = 0xaa;
	}
	if (!err && pwrite(fd, mbr, 4096, 0) != 4096)
		err = -EIO;
	if (!err && ioctl(fd, BLKRRPART))
		err = -errno;
	close(fd);
	free(mbr);
	if (err || !part)
		return err;
	snprintf(path, sizeof(path), "/dev/%sp1", name);
	for (k = 0; k < 100 && !(*part = blk_devt(path)); k++)
		usleep(20000);
	return *part ? 0 : -ENOENT;
}

/*
 * The controller of one leg of an md RAID1 over partitions is removed from
 * the bus under dma-buf reads and writes at QD 8: the I/O it had fails,
 * and so does I/O that reaches the gone member later (ENODEV, where the
 * mapping is traded: a partition keeps its size after its disk is gone),
 * md fails the leg for it and reads again from the other, and every I/O
 * completes with its data; the leg left holds every write.  The controller
 * comes back on a rescan, as a new disk.
 */
TEST_F(stack, raid1_serves_dmabuf_io_while_a_leg_controller_is_removed)
{
	struct bg_io r = { .writes = true };
	char path[128], text[64], bdf[64];
	unsigned long before;
	int ubuf, memfd;
	dev_t leg[2];
	pthread_t t;

	ASSERT_EQ(0, ctrl_bdf("dmabufrw-m3", bdf, sizeof(bdf)));
	ASSERT_EQ(0, member_partition(2, &leg[0]));
	ASSERT_EQ(0, member_partition(3, &leg[1]));
	ASSERT_EQ(0, md_create(&self->md, 1, leg, 2, 0));
	r.fd = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, r.fd);
	bg_io_start(_metadata, &r, &ubuf, &memfd, &t);
	sleep(1);
	before = r.done;
	close(self->fd[3]);
	self->fd[3] = -1;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", bdf);
	EXPECT_EQ(0, write_text(path, "1"));
	sleep(2);
	bg_io_stop(_metadata, &r, ubuf, memfd, t, before);

	md_attr(&self->md, "degraded", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(1, atoi(text));
	EXPECT_EQ(0, bg_io_check_fd(&r, self->fd[2], PART_START));
	close(r.fd);
	EXPECT_EQ(0, md_stop(&self->md));

	EXPECT_EQ(0, member_rescan(3)) TH_LOG("member 3 did not come back");
	EXPECT_EQ(0, member_partition(2, NULL));
	EXPECT_EQ(0, member_partition(3, NULL));
}

/*
 * The controller of one leg of an md RAID1 over partitions is removed from
 * the bus while no I/O is in flight: the next dma-buf I/O that reaches the
 * gone member fails there with ENODEV (a partition keeps its size after
 * its disk is gone, and an invalidated-like EAGAIN would have io_uring
 * issue it again for ever), md fails the leg for it, and reads and writes
 * complete on the other.  The leg left is write-mostly, so that md sends
 * the reads to the gone one.
 */
TEST_F(stack, raid1_io_reaching_a_removed_leg_fails_it_and_completes)
{
	char path[128], text[64], bdf[64], name[32];
	int i;
	dev_t leg[2];

	ASSERT_EQ(0, ctrl_bdf("dmabufrw-m1", bdf, sizeof(bdf)));
	ASSERT_EQ(0, member_partition(0, &leg[0]));
	ASSERT_EQ(0, member_partition(1, &leg[1]));
	ASSERT_EQ(0, md_create(&self->md, 1, leg, 2, 0));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	one_buf_init(_metadata, &self->b);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	pattern_fill(self->b.map, MiB, 71, 0);
	ASSERT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));
	member_name(0, name, sizeof(name));
	snprintf(path, sizeof(path), "/sys/block/%s/md/dev-%sp1/state",
		 strrchr(self->md.path, '/') + 1, name);
	ASSERT_EQ(0, write_text(path, "writemostly")) TH_LOG("%s", path);

	close(self->fd[1]);
	self->fd[1] = -1;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", bdf);
	ASSERT_EQ(0, write_text(path, "1"));
	/* reads go to either leg: enough of them reach the gone one */
	for (i = 0; i < 8; i++) {
		memset(self->b.map, 0, MiB);
		EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
		EXPECT_EQ(-1, pattern_check(self->b.map, MiB, 71, 0));
	}
	/* a read reached the gone leg, and md failed it for that */
	md_attr(&self->md, "degraded", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(1, atoi(text));
	pattern_fill(self->b.map, MiB, 72, MiB);
	EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, MiB));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[0], PART_START + MiB, MiB, 72,
				       MiB));

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, md_stop(&self->md));
	EXPECT_EQ(0, member_rescan(1)) TH_LOG("member 1 did not come back");
	EXPECT_EQ(0, member_partition(0, NULL));
	EXPECT_EQ(0, member_partition(1, NULL));
}

/*
 * A disk added to an md RAID1 after the registration is not one of its
 * members: a dma-buf write, which RAID1 sends to the new mirror too, fails
 * with EINVAL before any mirror gets it (RAID1 used to report it done,
 * though the new mirror lacked it, and then wrote the old mirror only),
 * and the new mirror is not failed for it.  Registered again, the buffer
 * writes both mirrors.
 */
TEST_F(stack, raid1_write_to_a_mirror_added_after_registration_fails_with_einval)
{
	char path[128], text[64];
	int i;

	one_buf_init(_metadata, &self->b);
	ASSERT_EQ(0, md_create(&self->md, 1, self->member + 2, 2, 0));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	pattern_fill(self->b.map, MiB, 51, 0);
	ASSERT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));

	/* member 1 replaces member 3, recovering slowly: it takes writes */
	ASSERT_EQ(0, md_fail_and_remove(&self->md, 3, self->member));
	md_attr(&self->md, "sync_speed_max", path, sizeof(path));
	ASSERT_EQ(0, write_text(path, "1000"));
	ASSERT_EQ(0, ioctl(self->md.fd, HOT_ADD_DISK, self->member[1]))
		TH_LOG("hot add: %s", strerror(errno));
	md_dev_attr(&self->md, 1, "slot", path, sizeof(path));
	for (i = 0; i < 100; i++) {
		if (read_text(path, text, sizeof(text)) > 0 && text[0] != 'n')
			break;
		usleep(20000);
	}
	ASSERT_GT(100, i) TH_LOG("member 1 did not take a slot");

	pattern_fill(self->b.map, MiB, 52, 0);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB,
					     2 * MiB));
	/* the old mirror holds the zeroes md_create() wrote */
	EXPECT_EQ(0, pattern_check_fd(self->fd[2], 2 * MiB, MiB, 52, 0));
	md_dev_attr(&self->md, 1, "state", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(NULL, strstr(text, "faulty")) TH_LOG("member 1: %s", text);

	/* registered again, the buffer writes both mirrors */
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 2 * MiB));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[2], 2 * MiB, MiB, 52, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[1], 2 * MiB, MiB, 52, 0));

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, md_stop(&self->md));
}

/*
 * A disk that replaced a failed mirror of an md RAID1 after the dma-buf's
 * registration has no mapping of it, but the mirror that was there does:
 * dma-buf reads go to that one, though read balancing would pick the new
 * disk first (slot 0, idle), and are never refused for it (they used to
 * fail with EINVAL, or go to the new disk and fail there).  Once only the
 * new disk is left, a read fails with EINVAL (register again), not EIO,
 * moves nothing and fails no mirror; registered again, the buffer reads it.
 */
TEST_F(stack, raid1_reads_go_to_a_registered_mirror_after_a_disk_is_replaced)
{
	char path[128], text[64];
	int i;

	one_buf_init(_metadata, &self->b);
	ASSERT_EQ(0, md_create(&self->md, 1, self->member + 2, 2, 0));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	pattern_fill(self->b.map, MiB, 61, 0);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB,
						 i * 4 * MiB));

	/* member 1 replaces member 2 in slot 0 and is recovered whole */
	ASSERT_EQ(0, md_fail_and_remove(&self->md, 2, self->member));
	ASSERT_EQ(0, ioctl(self->md.fd, HOT_ADD_DISK, self->member[1]))
		TH_LOG("hot add: %s", strerror(errno));
	md_dev_attr(&self->md, 1, "state", path, sizeof(path));
	for (i = 0; i < 1200; i++) {
		if (read_text(path, text, sizeof(text)) > 0 && strstr(text, "in_sync"))
			break;
		usleep(50000);
	}
	ASSERT_GT(1200, i) TH_LOG("member 1 not in sync after 60 s: %s", text);
	md_dev_attr(&self->md, 1, "slot", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	ASSERT_EQ(0, atoi(text)) TH_LOG("member 1 took slot %s", text);

	/* every read is served by member 3, at QD 1 and with both idle */
	for (i = 0; i < 8; i++) {
		memset(self->b.map, 0, MiB);
		EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB,
						 i % 4 * 4 * MiB));
		EXPECT_EQ(-1, pattern_check(self->b.map, MiB, 61, 0));
	}
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(0, atoi(text)) TH_LOG("member 1 left slot 0: %s", text);

	/* member 3 fails: the new disk alone cannot serve the registration */
	ASSERT_EQ(0, ioctl(self->md.fd, SET_DISK_FAULTY, self->member[3]));
	memset(self->b.map, 0x5a, MiB);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(0x5a, ((unsigned char *)self->b.map)[0]);
	EXPECT_EQ(0x5a, ((unsigned char *)self->b.map)[MiB - 1]);
	md_dev_attr(&self->md, 1, "state", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_EQ(NULL, strstr(text, "faulty")) TH_LOG("member 1: %s", text);

	/* registered again, the buffer reads the new disk */
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	EXPECT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 4 * MiB));
	EXPECT_EQ(-1, pattern_check(self->b.map, MiB, 61, 0));

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, md_stop(&self->md));
}

/*
 * RAID1 over a dm-linear device on member 1 and member 3, whose dm leg's
 * table is then swapped for one on member 0, which was not part of the
 * array when the dma-buf was registered (member 0 first gets what member 1
 * holds, so that the mirrors agree).  A dma-buf write reaches member 3 and
 * fails on the dm leg with EINVAL, where its bio reaches member 0; RAID1
 * cannot write it there again, and copies member 3's copy to the dm leg,
 * as a resync would.  The write fails with EINVAL, no mirror is failed,
 * and the mirrors agree.  RAID1 used to leave them different, the array
 * clean: what a read returned depended on the mirror it went to.
 */
TEST_F(stack, raid1_mirrors_agree_after_a_write_a_stacked_leg_refused)
{
	char params[64], path[128], text[64];
	dev_t legs[2];
	int leg;

	one_buf_init(_metadata, &self->b);
	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[1]),
		 minor(self->member[1]));
	ASSERT_EQ(0, dm_create(&self->dm[0], "leg", "linear", 64 * MiB / 512, params));
	legs[0] = self->dm[0].devt;
	legs[1] = self->member[3];
	ASSERT_EQ(0, md_create(&self->md, 1, legs, 2, 0));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	ASSERT_EQ(0, pattern_fill_fd(self->dev, 2 * MiB, MiB, 83, 0));
	ASSERT_EQ(0, pattern_fill_fd(self->fd[0], 2 * MiB, MiB, 83, 0));

	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[0]),
		 minor(self->member[0]));
	ASSERT_EQ(0, dm_reload(&self->dm[0], "linear", 64 * MiB / 512, params));
	pattern_fill(self->b.map, MiB, 84, 0);
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB,
					     2 * MiB));

	md_attr(&self->md, "degraded", path, sizeof(path));
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	EXPECT_STREQ("0", text) TH_LOG("a mirror was failed");
	leg = open(self->dm[0].path, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, leg);
	EXPECT_EQ(-1, pattern_check_fd(self->fd[3], 2 * MiB, MiB, 84, 0));
	EXPECT_EQ(-1, pattern_check_fd(leg, 2 * MiB, MiB, 84, 0))
		TH_LOG("the mirrors differ");
	close(leg);

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, md_stop(&self->md));
	EXPECT_EQ(0, dm_remove(&self->dm[0]));
}

/*
 * An md RAID0 array taken over to RAID5 under a registration (md's
 * "level" attribute: the data stay where they are, a parity disk missing)
 * fails dma-buf I/O with EOPNOTSUPP, as RAID5 would have the CPU compute
 * parity, and moves nothing.
 */
TEST_F(stack, io_after_raid0_takes_raid5_fails_with_eopnotsupp)
{
	char path[128], text[64];

	one_buf_init(_metadata, &self->b);
	ASSERT_EQ(0, md_create(&self->md, 0, self->member, STACK_MEMBERS, CHUNK));
	self->dev = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->b.ring, 0, self->b.ubuf, self->dev));
	pattern_fill(self->b.map, MiB, 61, 0);
	ASSERT_EQ(MiB, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));

	md_attr(&self->md, "level", path, sizeof(path));
	ASSERT_EQ(0, write_text(path, "raid5")) TH_LOG("takeover to raid5");
	ASSERT_LT(0, read_text(path, text, sizeof(text)));
	ASSERT_STREQ("raid5", text);

	pattern_fill(self->b.map, MiB, 62, 0);
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->b.ring, true, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, 0, MiB, 61, 0));
	memset(self->b.map, 0x5a, MiB);
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->b.ring, false, self->dev, 0, 0, MiB, 0));
	EXPECT_EQ(-1, first_not(self->b.map, MiB, 0x5a));

	close(self->dev);
	self->dev = -1;
	one_buf_exit(&self->b);
	EXPECT_EQ(0, md_stop(&self->md));
}

/*
 * dma-buf I/O on each supported stack, assembled afresh for each test:
 * md RAID0 over the four members (64 KiB chunks), md RAID1 over members 2
 * and 3, dm-linear over member 1 from 1 MiB on, dm-striped over the four
 * members (64 KiB chunks), and the NVMe multipath head; and stacks of
 * stacks: md RAID0 over two md RAID1 arrays (members 0 and 1, 2 and 3),
 * and dm-linear from 1 MiB on over md RAID0 over the four members.  A
 * udmabuf and a system-heap buffer of BUF_SIZE are registered for the
 * stacked device in slots 0 and 1.
 */
enum layout { STRIPED, MIRRORED, LINEAR, HEAD, STRIPED_MIRRORS, LINEAR_STRIPED };

#define BUF_SIZE	(32 * MiB)
#define LINEAR_START	MiB

FIXTURE(stack_io)
{
	int fd[STACK_MEMBERS];
	struct md_array md, inner[2];
	struct dm_dev dm;
	char path[64];
	int dev;		/* the stacked device, O_DIRECT */
	struct io_uring ring;
	int ubuf, memfd, heap;
	void *umap, *hmap;
};

FIXTURE_VARIANT(stack_io)
{
	enum layout layout;
	int md_level;		/* -1: not md */
	const char *dm_type;
	int members;		/* devices doing the DMA */
};

FIXTURE_VARIANT_ADD(stack_io, md_raid0)
{
	.layout = STRIPED, .md_level = 0, .members = 4,
};

FIXTURE_VARIANT_ADD(stack_io, md_raid1)
{
	.layout = MIRRORED, .md_level = 1, .members = 2,
};

FIXTURE_VARIANT_ADD(stack_io, dm_linear)
{
	.layout = LINEAR, .md_level = -1, .dm_type = "linear", .members = 1,
};

FIXTURE_VARIANT_ADD(stack_io, dm_striped)
{
	.layout = STRIPED, .md_level = -1, .dm_type = "striped", .members = 4,
};

FIXTURE_VARIANT_ADD(stack_io, nvme_multipath)
{
	.layout = HEAD, .md_level = -1, .members = 2,
};

FIXTURE_VARIANT_ADD(stack_io, md_raid0_over_md_raid1)
{
	.layout = STRIPED_MIRRORS, .md_level = 0, .members = 4,
};

FIXTURE_VARIANT_ADD(stack_io, dm_linear_over_md_raid0)
{
	.layout = LINEAR_STRIPED, .md_level = -1, .dm_type = "linear",
	.members = 4,
};

FIXTURE_SETUP(stack_io)
{
	int i;

	self->dev = self->ubuf = self->heap = self->memfd = -1;
	self->ring.ring_fd = -1;
	self->md.fd = self->inner[0].fd = self->inner[1].fd = -1;
	self->dm.devt = 0;
	for (i = 0; i < STACK_MEMBERS; i++) {
		self->fd[i] = -1;
		if (!member_devt(i))
			SKIP(return, "no member controller %d (scripts/run-vm test mode)", i);
	}
	REQUIRE_DMABUF_IO();
}

FIXTURE_TEARDOWN(stack_io)
{
	int i;

	if (self->ring.ring_fd >= 0)
		io_uring_queue_exit(&self->ring);
	if (self->dev >= 0)
		close(self->dev);
	if (self->ubuf >= 0)
		close(self->ubuf);
	if (self->memfd >= 0)
		close(self->memfd);
	if (self->heap >= 0)
		close(self->heap);
	for (i = 0; i < STACK_MEMBERS; i++)
		if (self->fd[i] >= 0)
			close(self->fd[i]);
	/* the ring's registrations go with its exit work; top down */
	EXPECT_EQ(0, dm_remove(&self->dm));
	EXPECT_EQ(0, md_stop(&self->md));
	EXPECT_EQ(0, md_stop(&self->inner[0]));
	EXPECT_EQ(0, md_stop(&self->inner[1]));
}

/*
 * Assemble the variant's stack and register the buffers.  Called by each
 * test, not by the setup, so that the teardown unwinds what a failure here
 * leaves (the harness skips the teardown of a setup that failed).
 */
static void stack_io_build(struct __test_metadata *_metadata,
			   FIXTURE_DATA(stack_io) *self,
			   const FIXTURE_VARIANT(stack_io) *variant)
{
	dev_t member[STACK_MEMBERS];
	char params[256], name[32];
	int i, len;

	for (i = 0; i < STACK_MEMBERS; i++)
		member[i] = member_devt(i);
	for (i = 0; i < STACK_MEMBERS; i++) {
		char path[64];

		member_name(i, name, sizeof(name));
		snprintf(path, sizeof(path), "/dev/%s", name);
		self->fd[i] = open(path, O_RDWR | O_DIRECT);
		ASSERT_LE(0, self->fd[i]);
	}

	if (variant->layout == STRIPED_MIRRORS) {
		dev_t pair[2];

		ASSERT_EQ(0, md_create(&self->inner[0], 1, member, 2, 0));
		ASSERT_EQ(0, md_create(&self->inner[1], 1, member + 2, 2, 0));
		pair[0] = blk_devt(self->inner[0].path);
		pair[1] = blk_devt(self->inner[1].path);
		ASSERT_EQ(0, md_create(&self->md, 0, pair, 2, CHUNK));
	} else if (variant->layout == LINEAR_STRIPED) {
		dev_t md0;

		ASSERT_EQ(0, md_create(&self->inner[0], 0, member, STACK_MEMBERS,
				       CHUNK));
		md0 = blk_devt(self->inner[0].path);
		snprintf(params, sizeof(params), "%u:%u %lu", major(md0),
			 minor(md0), LINEAR_START / 512);
		ASSERT_EQ(0, dm_create(&self->dm, "linear", "linear",
				       BUF_SIZE / 512, params));
	} else if (variant->md_level == 0) {
		ASSERT_EQ(0, md_create(&self->md, 0, member, STACK_MEMBERS, CHUNK));
	} else if (variant->md_level == 1) {
		ASSERT_EQ(0, md_create(&self->md, 1, member + 2, 2, 0));
	} else if (variant->layout == LINEAR) {
		snprintf(params, sizeof(params), "%u:%u %lu", major(member[1]),
			 minor(member[1]), LINEAR_START / 512);
		ASSERT_EQ(0, dm_create(&self->dm, "linear", "linear",
				       BUF_SIZE / 512, params));
	} else if (variant->layout == STRIPED) {
		len = snprintf(params, sizeof(params), "%d %lu", STACK_MEMBERS,
			       CHUNK / 512);
		for (i = 0; i < STACK_MEMBERS; i++)
			len += snprintf(params + len, sizeof(params) - len,
					" %u:%u 0", major(member[i]),
					minor(member[i]));
		ASSERT_EQ(0, dm_create(&self->dm, "striped", "striped",
				       BUF_SIZE / 512, params));
	}
	if (variant->md_level >= 0) {
		snprintf(self->path, sizeof(self->path), "%s", self->md.path);
	} else if (variant->dm_type) {
		snprintf(self->path, sizeof(self->path), "%s", self->dm.path);
	} else {
		mpath_name(name, sizeof(name));
		ASSERT_NE(0, *name) TH_LOG("no multipath head");
		snprintf(self->path, sizeof(self->path), "/dev/%s", name);
	}
	self->dev = open(self->path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->dev) TH_LOG("%s: %s", self->path, strerror(errno));

	self->ubuf = dmabufrw_alloc_udmabuf(BUF_SIZE, &self->memfd);
	ASSERT_LE(0, self->ubuf);
	self->umap = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			  self->memfd, 0);
	ASSERT_NE(MAP_FAILED, self->umap);
	self->heap = dmabufrw_alloc_heap("system", BUF_SIZE);
	ASSERT_LE(0, self->heap);
	self->hmap = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			  self->heap, 0);
	ASSERT_NE(MAP_FAILED, self->hmap);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 2));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->ubuf,
					      self->dev)) TH_LOG("%s", self->path);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 1, self->heap,
					      self->dev));
}


/*
 * @len bytes at @off of the stacked device, read back from where the layout
 * puts them on the members: -1 if they hold the pattern of @seed.
 */
static long check_members(FIXTURE_DATA(stack_io) *self, enum layout layout,
			  uint64_t off, size_t len, uint64_t seed)
{
	long bad;

	switch (layout) {
	case STRIPED:
		return check_striped(self->fd, STACK_MEMBERS, 0, off, len, seed);
	case STRIPED_MIRRORS: {
		const int leg0[] = { self->fd[0], self->fd[2] };
		const int leg1[] = { self->fd[1], self->fd[3] };

		bad = check_striped(leg0, 2, 0, off, len, seed);
		return bad != -1 ? bad : check_striped(leg1, 2, 0, off, len, seed);
	}
	case LINEAR_STRIPED:
		return check_striped(self->fd, STACK_MEMBERS, LINEAR_START, off,
				     len, seed);
	case MIRRORED:
		bad = pattern_check_fd(self->fd[2], off, len, seed, off);
		return bad != -1 ? bad :
		       pattern_check_fd(self->fd[3], off, len, seed, off);
	case LINEAR:
		return pattern_check_fd(self->fd[1], LINEAR_START + off, len,
					seed, off);
	default:	/* the head's paths have no device node */
		return -1;
	}
}

static long heap_check(FIXTURE_DATA(stack_io) *self, uint64_t off, size_t len,
		       uint64_t seed, uint64_t pos)
{
	long bad;

	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_READ);
	bad = pattern_check(self->hmap + off, len, seed, pos);
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_READ);
	return bad;
}

/*
 * Write @n transfers from the udmabuf at queue depth @qd, read them back
 * into the heap buffer (filled with other bytes first), and check them in
 * the heap buffer, through the stacked device (O_DIRECT reads of pages)
 * and on the members.
 */
static void round_trip(struct __test_metadata *_metadata,
		       FIXTURE_DATA(stack_io) *self, enum layout layout,
		       const struct fixed_io *x, unsigned int n,
		       unsigned int qd, uint64_t seed)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		pattern_fill(self->umap + x[i].buf_off, x[i].len, seed, x[i].off);
	ASSERT_EQ(0, fixed_io_batch(&self->ring, true, self->dev, 0, x, n, qd));
	dmabufrw_cpu_begin(self->heap, DMA_BUF_SYNC_WRITE);
	memset(self->hmap, 0xee, BUF_SIZE);
	dmabufrw_cpu_end(self->heap, DMA_BUF_SYNC_WRITE);
	ASSERT_EQ(0, fixed_io_batch(&self->ring, false, self->dev, 1, x, n, qd));
	for (i = 0; i < n; i++) {
		EXPECT_EQ(-1, heap_check(self, x[i].buf_off, x[i].len, seed,
					 x[i].off))
			TH_LOG("qd %u transfer %u", qd, i);
		EXPECT_EQ(-1, pattern_check_fd(self->dev, x[i].off, x[i].len,
					       seed, x[i].off))
			TH_LOG("qd %u transfer %u", qd, i);
		EXPECT_EQ(-1, check_members(self, layout, x[i].off, x[i].len,
					    seed))
			TH_LOG("qd %u transfer %u", qd, i);
	}
}

/*
 * Round trips through the stack: transfers of 4 KiB to 16 MiB that start
 * and end inside chunks and cross chunk and member boundaries, all at once;
 * then random transfers of 4 KiB to 256 KiB at queue depths 1, 8 and 64.
 * Each is checked in the buffer it was read into, through the stacked
 * device and on the members.  On RAID0 over RAID1 under TCG this comes
 * close to the harness's default limit of 30 s, and beside another VM
 * (TEST_LANES=2) it ran out.
 */
TEST_F_TIMEOUT(stack_io, round_trips_cross_chunks_and_members, 300)
{
	const struct fixed_io fixed[] = {
		{ .buf_off = 0, .off = 0, .len = 4 * KiB },
		{ .buf_off = 4 * KiB, .off = CHUNK - 4 * KiB, .len = 8 * KiB },
		{ .buf_off = 12 * KiB, .off = 3 * CHUNK + 32 * KiB,
		  .len = 4 * CHUNK },
		{ .buf_off = MiB, .off = 5 * MiB + 12 * KiB, .len = MiB },
		{ .buf_off = 2 * MiB + 8 * KiB, .off = 7 * MiB, .len = 4 * MiB },
		{ .buf_off = 8 * MiB, .off = 12 * MiB + CHUNK, .len = 16 * MiB },
	};
	const unsigned int qds[] = { 1, 8, 64 }, n = 24, slot = 256 * KiB;
	struct fixed_io x[24];
	unsigned int q, i;

	stack_io_build(_metadata, self, variant);

	round_trip(_metadata, self, variant->layout, fixed, 6, 6, 0x57ac0);

	srandom(0x57ac1);
	for (q = 0; q < 3; q++) {
		for (i = 0; i < n; i++) {
			unsigned int len = (1 + random() % (slot / (4 * KiB))) * 4 * KiB;
			unsigned int room = (slot - len) / (4 * KiB);

			x[i].len = len;
			x[i].buf_off = i * slot + (random() % (room + 1)) * 4 * KiB;
			x[i].off = (q * n + i) * slot +
				   (random() % (room + 1)) * 4 * KiB;
		}
		round_trip(_metadata, self, variant->layout, x, n, qds[q],
			   0x57ac2 + q);
	}
}

/*
 * The registration is the stacked device's, and it maps the buffer once
 * for each device that does the DMA: fdinfo shows the slot's context as
 * stacked with the variant's number of members, and debugfs dma_buf/io
 * lists a context of the udmabuf for each member controller, mapped once
 * a write went through each (a multipath head's through one path).
 */
TEST_F(stack_io, registration_maps_once_per_member)
{
	char line[1024], val[64], path[64];
	int members = 0, mapped = 0;
	unsigned long ino;
	const char *dev;
	char *text, *p;
	FILE *f;

	stack_io_build(_metadata, self, variant);
	ino = file_ino(self->ubuf);
	dev = strrchr(self->path, '/') + 1;

	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, self->ring.ring_fd, 0, line,
					  sizeof(line)));
	ASSERT_EQ(0, dmabufrw_fdinfo_value(line, "state", val, sizeof(val)))
		TH_LOG("%s", line);
	EXPECT_STREQ("stacked", val);
	ASSERT_EQ(0, dmabufrw_fdinfo_value(line, "members", val, sizeof(val)));
	EXPECT_EQ(variant->members, atoi(val));
	/* a device-mapper device shows as dm-N, whatever its name */
	ASSERT_EQ(0, dmabufrw_fdinfo_value(line, "dev", val, sizeof(val)));
	snprintf(path, sizeof(path), "%s", dev);
	EXPECT_STREQ(path, val);

	/* a write of the first 4 MiB reaches every member, mirrors included */
	EXPECT_EQ(4 * MiB, dmabufrw_rw_fixed(&self->ring, true, self->dev, 0,
					     0, 4 * MiB, 0));
	f = fopen("/sys/kernel/debug/dma_buf/io", "r");
	ASSERT_NE(NULL, f);
	text = calloc(1, 1 << 20);
	ASSERT_NE(NULL, text);
	fread(text, 1, (1 << 20) - 1, f);
	fclose(f);
	for (p = strtok(text, "\n"); p; p = strtok(NULL, "\n")) {
		char key[32];

		snprintf(key, sizeof(key), "ino=%lu ", ino);
		if (!strstr(p, key) || strstr(p, "state=stacked"))
			continue;
		members++;
		mapped += !!strstr(p, "state=mapped");
	}
	free(text);
	EXPECT_EQ(variant->members, members);
	/* the multipath head sends each I/O down one path */
	EXPECT_LE(variant->layout == HEAD ? 1 : variant->members, mapped);
}

/* The references that hold nvme-pci loaded, or -1 if it is built in. */
static int nvme_refcnt(void)
{
	char buf[32];

	if (read_text("/sys/module/nvme/refcnt", buf, sizeof(buf)) < 0)
		return -1;
	return atoi(buf);
}

/*
 * Each member's context of a registration holds nvme-pci loaded: the
 * context's last reference may free its controller, which runs nvme-pci's
 * code, and a registration may outlive every open of its members (a
 * multipath head's paths are never opened, an md or dm member may leave
 * the stack).  The module's references drop by one per member and buffer
 * when the two slots are emptied; and while nothing but the multipath
 * head's registrations hold nvme-pci, unloading it fails with EWOULDBLOCK.
 */
TEST_F(stack_io, member_contexts_keep_nvme_pci_loaded)
{
	int i, held, left, tries, contexts = 2 * variant->members;

	stack_io_build(_metadata, self, variant);

	if (nvme_refcnt() < 0)
		SKIP(return, "nvme-pci is built in (CONFIG_BLK_DEV_NVME=y)");
	/* opening a namespace holds the module too */
	for (i = 0; i < STACK_MEMBERS; i++) {
		close(self->fd[i]);
		self->fd[i] = -1;
	}
	held = nvme_refcnt();
	ASSERT_LE(contexts, held);
	if (variant->layout == HEAD) {
		ASSERT_EQ(contexts, held) TH_LOG("something else holds nvme");
		EXPECT_EQ(-1, syscall(SYS_delete_module, "nvme", O_NONBLOCK));
		EXPECT_EQ(EWOULDBLOCK, errno);
	}

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 1));
	for (tries = 0; tries < 100; tries++) {
		left = nvme_refcnt();
		if (left <= held - contexts)
			break;
		usleep(20000);
	}
	EXPECT_EQ(held - contexts, left);
}

TEST_HARNESS_MAIN
