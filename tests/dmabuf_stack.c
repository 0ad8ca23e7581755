// SPDX-License-Identifier: GPL-2.0
/*
 * Stacked block devices over the test VM's member controllers: md RAID0
 * and RAID1, dm-linear and dm-striped, and an NVMe multipath head of two
 * controllers (tests/stack.h, scripts/run-vm).
 *
 * First, that the rig is what the stacking work relies on: each stack puts
 * the bytes written through it where its layout says, on each member, as
 * read back from the members themselves; the multipath head serves I/O over
 * either path and survives losing one.  Then what a dma-buf registration on
 * a stacked device gets today: each refusal with its errno, and nothing
 * registered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/fs.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "stack.h"
#include "dmabufrw.h"

#define KiB	1024UL
#define MiB	(1024UL * 1024)

#define CHUNK	(64 * KiB)

FIXTURE(stack)
{
	dev_t member[STACK_MEMBERS];
	int fd[STACK_MEMBERS];
};

FIXTURE_SETUP(stack)
{
	int i;

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

FIXTURE_TEARDOWN(stack)
{
	int i;

	for (i = 0; i < STACK_MEMBERS; i++)
		if (self->fd[i] >= 0)
			close(self->fd[i]);
}

/*
 * The pattern of @seed at @off of a device striped over @n of the fixture's
 * members in chunks of CHUNK, from their start: each chunk is on member
 * (chunk % n) at (chunk / n) * CHUNK.  Checks @len bytes; the first bad
 * array offset, or -1.
 */
static long check_striped(const int *fds, int n, uint64_t off, size_t len,
			  uint64_t seed)
{
	uint64_t pos;

	for (pos = off; pos < off + len; pos += CHUNK) {
		uint64_t chunk = pos / CHUNK;
		uint64_t moff = chunk / n * CHUNK + pos % CHUNK;
		size_t part = CHUNK - pos % CHUNK;

		if (part > off + len - pos)
			part = off + len - pos;
		if (pattern_check_fd(fds[chunk % n], moff, part, seed, pos) != -1)
			return pos;
	}
	return -1;
}

/* What the rig gives the stacking tests: four members and a two-path head. */
TEST_F(stack, members_and_multipath_head_are_present)
{
	char head[32], path[300], buf[64];
	int i, paths = 0;
	uint64_t size;
	DIR *d;
	struct dirent *e;

	for (i = 0; i < STACK_MEMBERS; i++) {
		ASSERT_EQ(0, ioctl(self->fd[i], BLKGETSIZE64, &size));
		EXPECT_LE(16 * MiB, size);
	}
	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head) TH_LOG("no multipath head (CONFIG_NVME_MULTIPATH?)");
	/* the head's paths: one disk nvmeXcYnZ under each controller */
	d = opendir("/sys/class/nvme");
	ASSERT_NE(NULL, d);
	while ((e = readdir(d))) {
		DIR *c;
		struct dirent *f;

		snprintf(path, sizeof(path), "/sys/class/nvme/%s/serial", e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 || strcmp(buf, "dmabufrw-mp"))
			continue;
		snprintf(path, sizeof(path), "/sys/class/nvme/%s", e->d_name);
		c = opendir(path);
		ASSERT_NE(NULL, c);
		while ((f = readdir(c))) {
			int x, y, z;

			if (sscanf(f->d_name, "nvme%dc%dn%d", &x, &y, &z) == 3)
				paths++;
		}
		closedir(c);
	}
	closedir(d);
	EXPECT_EQ(2, paths);
}

/* md RAID0 puts chunk k of the array on member k % 4. */
TEST_F(stack, md_raid0_places_each_chunk_on_its_member)
{
	struct md_array md;
	int fd;

	ASSERT_EQ(0, md_create(&md, 0, self->member, STACK_MEMBERS, CHUNK));
	fd = open(md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	/* 4 MiB at 1.5 chunks in: partial chunks at both ends */
	ASSERT_EQ(0, pattern_fill_fd(fd, CHUNK + CHUNK / 2, 4 * MiB, 11,
				     CHUNK + CHUNK / 2));
	EXPECT_EQ(-1, pattern_check_fd(fd, CHUNK + CHUNK / 2, 4 * MiB, 11,
				       CHUNK + CHUNK / 2));
	EXPECT_EQ(-1, check_striped(self->fd, STACK_MEMBERS, CHUNK + CHUNK / 2,
				    4 * MiB, 11));
	close(fd);
	EXPECT_EQ(0, md_stop(&md));
}

/* md RAID1 writes both legs, from their first sector. */
TEST_F(stack, md_raid1_writes_both_legs)
{
	struct md_array md;
	int fd;

	ASSERT_EQ(0, md_create(&md, 1, self->member + 2, 2, 0));
	fd = open(md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, pattern_fill_fd(fd, 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(fd, 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[2], 3 * MiB, 2 * MiB, 12, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[3], 3 * MiB, 2 * MiB, 12, 0));
	close(fd);
	EXPECT_EQ(0, md_stop(&md));
}

/* dm-linear maps its sectors to the member at the table's offset. */
TEST_F(stack, dm_linear_maps_at_its_offset)
{
	struct dm_dev dm;
	char params[64];
	int fd;

	snprintf(params, sizeof(params), "%u:%u 2048", major(self->member[1]),
		 minor(self->member[1]));
	ASSERT_EQ(0, dm_create(&dm, "linear", "linear", 8192, params));
	fd = open(dm.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, pattern_fill_fd(fd, 512 * KiB, MiB, 13, 0));
	EXPECT_EQ(-1, pattern_check_fd(fd, 512 * KiB, MiB, 13, 0));
	EXPECT_EQ(-1, pattern_check_fd(self->fd[1], MiB + 512 * KiB, MiB, 13, 0));
	close(fd);
	EXPECT_EQ(0, dm_remove(&dm));
}

/* dm-striped puts chunk k on member k % 4, as md RAID0 does. */
TEST_F(stack, dm_striped_places_each_chunk_on_its_member)
{
	char params[256];
	struct dm_dev dm;
	int fd, i, len;

	len = snprintf(params, sizeof(params), "%d %lu", STACK_MEMBERS,
		       CHUNK / 512);
	for (i = 0; i < STACK_MEMBERS; i++)
		len += snprintf(params + len, sizeof(params) - len, " %u:%u 0",
				major(self->member[i]), minor(self->member[i]));
	ASSERT_EQ(0, dm_create(&dm, "striped", "striped",
			       STACK_MEMBERS * 16384, params));
	fd = open(dm.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, pattern_fill_fd(fd, CHUNK / 2, 3 * MiB, 14, CHUNK / 2));
	EXPECT_EQ(-1, pattern_check_fd(fd, CHUNK / 2, 3 * MiB, 14, CHUNK / 2));
	EXPECT_EQ(-1, check_striped(self->fd, STACK_MEMBERS, CHUNK / 2,
				    3 * MiB, 14));
	close(fd);
	EXPECT_EQ(0, dm_remove(&dm));
}

/*
 * The multipath head serves I/O with one of its controllers removed, and
 * takes the controller back as a path once the bus is rescanned.
 */
TEST_F(stack, multipath_head_serves_io_without_one_path)
{
	char head[32], path[300], link[300], remove[400], buf[64];
	struct dirent *e;
	ssize_t n = 0;
	int fd, i;
	DIR *d;

	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head);
	snprintf(path, sizeof(path), "/dev/%s", head);
	fd = open(path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd) TH_LOG("%s: %s", path, strerror(errno));
	ASSERT_EQ(0, pattern_fill_fd(fd, 0, MiB, 15, 0));

	/* the PCI device of one of the head's controllers */
	d = opendir("/sys/class/nvme");
	ASSERT_NE(NULL, d);
	while ((e = readdir(d)) && n <= 0) {
		snprintf(path, sizeof(path), "/sys/class/nvme/%s/serial", e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 || strcmp(buf, "dmabufrw-mp"))
			continue;
		snprintf(path, sizeof(path), "/sys/class/nvme/%s/device", e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
	}
	closedir(d);
	ASSERT_LT(0, n);
	link[n] = 0;
	snprintf(remove, sizeof(remove), "/sys/bus/pci/devices/%s/remove",
		 strrchr(link, '/') + 1);
	ASSERT_EQ(0, write_text(remove, "1"));

	EXPECT_EQ(-1, pattern_check_fd(fd, 0, MiB, 15, 0));
	ASSERT_EQ(0, pattern_fill_fd(fd, MiB, MiB, 16, 0));
	EXPECT_EQ(-1, pattern_check_fd(fd, MiB, MiB, 16, 0));

	ASSERT_EQ(0, write_text("/sys/bus/pci/rescan", "1"));
	/* both paths again */
	for (i = 0; i < 200; i++) {
		FILE *p = popen("ls -d /sys/class/nvme/nvme*/nvme*c*n* | wc -l", "r");
		int paths = 0;

		ASSERT_NE(NULL, p);
		if (fscanf(p, "%d", &paths) != 1)
			paths = 0;
		pclose(p);
		if (paths == 2)
			break;
		usleep(100000);
	}
	EXPECT_GT(200, i) TH_LOG("the removed path did not come back");
	EXPECT_EQ(-1, pattern_check_fd(fd, 0, MiB, 15, 0));
	EXPECT_EQ(-1, pattern_check_fd(fd, MiB, MiB, 16, 0));
	close(fd);
}

/*
 * A dma-buf registration with the stacked device @path as target:
 * EOPNOTSUPP, the errno of a device that cannot do dma-buf I/O, and the
 * slot stays empty.
 */
static void expect_refused(struct __test_metadata *_metadata,
			   struct io_uring *ring, int ubuf, const char *path)
{
	int fd = open(path, O_RDWR | O_DIRECT);

	ASSERT_LE(0, fd) TH_LOG("%s: %s", path, strerror(errno));
	EXPECT_EQ(-EOPNOTSUPP, dmabufrw_register_dmabuf(ring, 0, ubuf, fd))
		TH_LOG("%s", path);
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(ring, false, fd, 0, 0, 4096, 0));
	close(fd);
}

/*
 * Registrations on stacked devices are refused today: md, dm and NVMe
 * multipath heads have no ->dmabuf_io_create().  A dm-zero device (a
 * target that fills reads with the CPU) must stay refused for good.
 */
TEST_F(stack, registration_on_stacked_devices_is_refused)
{
	char head[32], path[64], params[64];
	struct io_uring ring;
	struct md_array md;
	struct dm_dev dm;
	int ubuf, memfd;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));

	ASSERT_EQ(0, md_create(&md, 0, self->member, 2, CHUNK));
	expect_refused(_metadata, &ring, ubuf, md.path);
	EXPECT_EQ(0, md_stop(&md));
	ASSERT_EQ(0, md_create(&md, 1, self->member, 2, 0));
	expect_refused(_metadata, &ring, ubuf, md.path);
	EXPECT_EQ(0, md_stop(&md));
	snprintf(params, sizeof(params), "%u:%u 0", major(self->member[0]),
		 minor(self->member[0]));
	ASSERT_EQ(0, dm_create(&dm, "linear", "linear", 2048, params));
	expect_refused(_metadata, &ring, ubuf, dm.path);
	EXPECT_EQ(0, dm_remove(&dm));
	ASSERT_EQ(0, dm_create(&dm, "zero", "zero", 2048, ""));
	expect_refused(_metadata, &ring, ubuf, dm.path);
	EXPECT_EQ(0, dm_remove(&dm));
	mpath_name(head, sizeof(head));
	ASSERT_NE(0, *head);
	snprintf(path, sizeof(path), "/dev/%s", head);
	expect_refused(_metadata, &ring, ubuf, path);

	io_uring_queue_exit(&ring);
	close(ubuf);
	close(memfd);
}

TEST_HARNESS_MAIN
