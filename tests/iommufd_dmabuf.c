// SPDX-License-Identifier: GPL-2.0
/*
 * iommufd maps dma-bufs into an IOAS through dma_buf_get_phys(): check,
 * with the iommufd selftest mock domain (CONFIG_IOMMUFD_TEST), that every
 * IOVA translates to the page behind its offset in the buffer, for buffers
 * of any number of physical ranges (udmabufs of scattered memfd pages, the
 * system heap, the test exporter), in every domain of the IOAS, and that a
 * revoked buffer is unmapped from all of them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/dma-heap.h>
#include <linux/iommufd.h>
#include <linux/udmabuf.h>

#include "kselftest_harness.h"
#include "iommu/iommufd/iommufd_test.h"
#include "util.h"
#include "texp.h"

#define PAGE	4096UL
#define NPAGES	4

FIXTURE(iommufd_dmabuf) {
	int fd;
	int memfd;
	__u32 ioas_id;
	__u32 hwpt_id;
	void *map;
};

FIXTURE_SETUP(iommufd_dmabuf)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct iommu_test_cmd mock = {
		.size = sizeof(mock),
		.op = IOMMU_TEST_OP_MOCK_DOMAIN,
	};

	self->fd = open("/dev/iommu", O_RDWR);
	if (self->fd < 0 && errno == ENOENT)
		SKIP(return, "no /dev/iommu (CONFIG_IOMMUFD)");
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOC, &alloc));
	self->ioas_id = alloc.out_ioas_id;
	mock.id = self->ioas_id;
	if (ioctl(self->fd, IOMMU_TEST_CMD, &mock))
		SKIP(return, "no iommufd mock domain (CONFIG_IOMMUFD_TEST)");
	self->hwpt_id = mock.mock_domain.out_hwpt_id;

	self->memfd = memfd_create("iommufd_dmabuf", MFD_ALLOW_SEALING);
	ASSERT_LE(0, self->memfd);
	ASSERT_EQ(0, ftruncate(self->memfd, 4 * PAGE));
	ASSERT_EQ(0, fcntl(self->memfd, F_ADD_SEALS, F_SEAL_SHRINK));
	self->map = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
			 self->memfd, 0);
	ASSERT_NE(MAP_FAILED, self->map);
	memset(self->map, 0x5a, 4 * PAGE);	/* allocate the pages */
}

FIXTURE_TEARDOWN(iommufd_dmabuf)
{
	if (self->map && self->map != MAP_FAILED)
		munmap(self->map, 4 * PAGE);
	if (self->memfd > 0)
		close(self->memfd);
	if (self->fd >= 0)
		close(self->fd);
}

/* A udmabuf of @n pages of the memfd, at page offsets @pgoff. */
static int udmabuf_of(int memfd, const unsigned int *pgoff, unsigned int n)
{
	struct {
		struct udmabuf_create_list head;
		struct udmabuf_create_item items[4];
	} list = { .head = { .flags = UDMABUF_FLAGS_CLOEXEC, .count = n } };
	int dev, fd;

	for (unsigned int i = 0; i < n; i++) {
		list.items[i].memfd = memfd;
		list.items[i].offset = pgoff[i] * PAGE;
		list.items[i].size = PAGE;
	}
	dev = open("/dev/udmabuf", O_RDWR);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, UDMABUF_CREATE_LIST, &list);
	close(dev);
	return fd;
}

/* Map @len bytes of @dfd; @extra: more IOMMU_IOAS_MAP_* flags. */
static int map_file_flags(int fd, __u32 ioas_id, int dfd, size_t len,
			  __u32 extra, __u64 *iova)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE |
			 extra,
		.ioas_id = ioas_id,
		.fd = dfd,
		.length = len,
	};
	int ret = ioctl(fd, IOMMU_IOAS_MAP_FILE, &cmd);

	*iova = cmd.iova;
	return ret;
}

static int map_file(int fd, __u32 ioas_id, int dfd, size_t len, __u64 *iova)
{
	return map_file_flags(fd, ioas_id, dfd, len, 0, iova);
}

/* Map a buffer that the exporter may move (IOMMU_IOAS_MAP_DMABUF_MOVE). */
static int map_file_move(int fd, __u32 ioas_id, int dfd, size_t len,
			 __u64 *iova)
{
	return map_file_flags(fd, ioas_id, dfd, len,
			      IOMMU_IOAS_MAP_DMABUF_MOVE, iova);
}

static int unmap_iova(int fd, __u32 ioas_id, __u64 iova, size_t len)
{
	struct iommu_ioas_unmap cmd = {
		.size = sizeof(cmd),
		.ioas_id = ioas_id,
		.iova = iova,
		.length = len,
	};

	return ioctl(fd, IOMMU_IOAS_UNMAP, &cmd);
}

static int check_map(int fd, __u32 hwpt_id, __u64 iova, size_t len, void *uptr)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_MD_CHECK_MAP,
		.id = hwpt_id,
		.check_map = { .iova = iova, .length = len,
			       .uptr = (uintptr_t)uptr },
	};

	return ioctl(fd, IOMMU_TEST_CMD, &cmd);
}

/*
 * Read @len bytes at @iova of the mock domain @hwpt_id from the memory the
 * IOVAs translate to, as the device would.
 */
static int md_read(int fd, __u32 hwpt_id, __u64 iova, size_t len, void *buf)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_MD_READ,
		.id = hwpt_id,
		.md_read = { .iova = iova, .length = len,
			     .uptr = (uintptr_t)buf },
	};

	return ioctl(fd, IOMMU_TEST_CMD, &cmd);
}

static int access_create(int fd, __u32 ioas_id);
static int access_rw(int fd, int afd, __u64 iova, void *buf, size_t len,
		     int write);

/* Do the @len bytes at @iova read, through a new access, what @expect holds? */
static int access_read_is(int fd, __u32 ioas_id, __u64 iova,
			  const void *expect, size_t len)
{
	unsigned char *buf = malloc(len);
	int afd = access_create(fd, ioas_id);
	int ret = -1;

	if (buf && afd >= 0 && !access_rw(fd, afd, iova, buf, len, 0))
		ret = memcmp(buf, expect, len) ? 1 : 0;
	if (afd >= 0)
		close(afd);
	free(buf);
	return ret;
}

/* A second mock domain on the IOAS: its hwpt, or 0. */
static __u32 add_domain(int fd, __u32 ioas_id)
{
	struct iommu_test_cmd mock = {
		.size = sizeof(mock),
		.op = IOMMU_TEST_OP_MOCK_DOMAIN,
		.id = ioas_id,
	};

	if (ioctl(fd, IOMMU_TEST_CMD, &mock))
		return 0;
	return mock.mock_domain.out_hwpt_id;
}

/* Page @i of a pattern: every byte says which page and where. */
static void fill_pattern(unsigned char *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(seed * 131 + i / PAGE * 7 + i % 251);
}

/*
 * Do the @len bytes at @iova read, through each of the domains @hwpt[0..n),
 * what @expect holds?
 */
static int domains_read(int fd, const __u32 *hwpt, int n, __u64 iova,
			const void *expect, size_t len)
{
	unsigned char *buf = malloc(len);
	int ret = 0;

	if (!buf)
		return -1;
	for (int i = 0; i < n && !ret; i++) {
		memset(buf, 0, len);
		if (md_read(fd, hwpt[i], iova, len, buf))
			ret = -1;
		else if (memcmp(buf, expect, len))
			ret = 1;
	}
	free(buf);
	return ret;
}

/* One page: always contiguous; the IOVA leads to the memfd's page. */
TEST_F(iommufd_dmabuf, udmabuf_one_page)
{
	static const unsigned int pg[] = { 2 };
	__u64 iova;
	int dfd;

	dfd = udmabuf_of(self->memfd, pg, 1);
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, PAGE, &iova));
	EXPECT_EQ(0, check_map(self->fd, self->hwpt_id, iova, PAGE,
			       self->map + 2 * PAGE));
	/* And not to another page of the memfd. */
	EXPECT_NE(0, check_map(self->fd, self->hwpt_id, iova, PAGE,
			       self->map + 1 * PAGE));
	close(dfd);
}

/*
 * Pages of the memfd out of order are four physical ranges: each IOVA page
 * leads to the memfd page at that offset of the udmabuf, in the domain that
 * was there at the map and in one attached afterwards, and an in-kernel
 * access reads the same.
 */
TEST_F(iommufd_dmabuf, udmabuf_scattered_pages_map_at_their_offsets)
{
	/* no page follows its predecessor in the memfd */
	static const unsigned int pg[NPAGES] = { 3, 1, 0, 2 };
	unsigned char expect[NPAGES * PAGE];
	__u32 hwpt[2] = { self->hwpt_id };
	__u64 iova;
	int dfd;

	fill_pattern(self->map, NPAGES * PAGE, 1);
	for (unsigned int i = 0; i < NPAGES; i++)
		memcpy(expect + i * PAGE, self->map + pg[i] * PAGE, PAGE);
	dfd = udmabuf_of(self->memfd, pg, NPAGES);
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, NPAGES * PAGE,
			      &iova));
	hwpt[1] = add_domain(self->fd, self->ioas_id);
	ASSERT_NE(0, hwpt[1]);

	for (unsigned int d = 0; d < 2; d++) {
		for (unsigned int i = 0; i < NPAGES; i++) {
			EXPECT_EQ(0, check_map(self->fd, hwpt[d],
					       iova + i * PAGE, PAGE,
					       self->map + pg[i] * PAGE));
			/* nor to the one a single range would lead to */
			if (i)
				EXPECT_NE(0, check_map(self->fd, hwpt[d],
						       iova + i * PAGE, PAGE,
						       self->map +
						       (pg[i - 1] + 1) %
						       NPAGES * PAGE));
		}
	}
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect,
				  sizeof(expect)));
	EXPECT_EQ(0, access_read_is(self->fd, self->ioas_id, iova, expect,
				    sizeof(expect)));
	close(dfd);
}

/* The same page twice: two ranges that both lead to it. */
TEST_F(iommufd_dmabuf, udmabuf_same_page_twice_maps_both)
{
	static const unsigned int pg[] = { 1, 1 };
	__u64 iova;
	int dfd;

	dfd = udmabuf_of(self->memfd, pg, 2);
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, 2 * PAGE, &iova));
	EXPECT_EQ(0, check_map(self->fd, self->hwpt_id, iova, PAGE,
			       self->map + PAGE));
	EXPECT_EQ(0, check_map(self->fd, self->hwpt_id, iova + PAGE, PAGE,
			       self->map + PAGE));
	close(dfd);
}

/*
 * A system heap buffer (pages of mixed orders): the whole buffer and a
 * slice of it that starts inside a range map every IOVA to the bytes at
 * its offset, through two domains and an in-kernel access.
 */
TEST_F(iommufd_dmabuf, heap_buffer_maps_every_page_at_its_offset)
{
	const size_t len = 1024 * PAGE;
	struct dma_heap_allocation_data alloc = {
		.len = len,
		.fd_flags = O_RDWR | O_CLOEXEC,
	};
	struct iommu_ioas_map_file slice = {
		.size = sizeof(slice),
		.flags = IOMMU_IOAS_MAP_READABLE,
		.ioas_id = self->ioas_id,
		.start = 333 * PAGE,
		.length = 77 * PAGE,
	};
	__u32 hwpt[2] = { self->hwpt_id };
	unsigned char *p;
	__u64 iova;
	int heap;

	heap = open("/dev/dma_heap/system", O_RDONLY);
	if (heap < 0)
		SKIP(return, "no system heap");
	ASSERT_EQ(0, ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &alloc));
	close(heap);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, alloc.fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	fill_pattern(p, len, 2);
	hwpt[1] = add_domain(self->fd, self->ioas_id);
	ASSERT_NE(0, hwpt[1]);

	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, alloc.fd, len, &iova));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, p, len));
	EXPECT_EQ(0, access_read_is(self->fd, self->ioas_id, iova, p, len));

	slice.fd = alloc.fd;
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &slice));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, slice.iova,
				  p + slice.start, slice.length));
	EXPECT_EQ(0, access_read_is(self->fd, self->ioas_id, slice.iova + 100,
				    p + slice.start + 100, slice.length - 200));
	/* and not what the start of the buffer holds */
	EXPECT_EQ(1, domains_read(self->fd, hwpt, 1, slice.iova, p,
				  slice.length));
	munmap(p, len);
	close(alloc.fd);
}

/* An in-kernel access to the IOAS (the selftest's): its fd. */
static int access_create(int fd, __u32 ioas_id)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_CREATE_ACCESS,
		.id = ioas_id,
	};

	if (ioctl(fd, IOMMU_TEST_CMD, &cmd))
		return -1;
	return cmd.create_access.out_access_fd;
}

/* Read or write @len bytes at @iova through the access @afd. */
static int access_rw(int fd, int afd, __u64 iova, void *buf, size_t len,
		     int write)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_ACCESS_RW,
		.id = afd,
		.access_rw = { .iova = iova, .length = len,
			       .uptr = (uintptr_t)buf,
			       .flags = write ? MOCK_ACCESS_RW_WRITE : 0 },
	};

	return ioctl(fd, IOMMU_TEST_CMD, &cmd);
}

/*
 * After a move the new ranges are mapped by a work item, page by page and
 * domain by domain: wait (at most 10 s) until the domain @hwpt_id translates
 * all of [@iova, @iova + @len) again.
 */
static int md_wait_mapped(int fd, __u32 hwpt_id, __u64 iova, size_t len)
{
	unsigned char *b = malloc(len);
	double end = now_sec() + 10;
	int ret = 0;

	while (!b || md_read(fd, hwpt_id, iova, len, b)) {
		if (!b || errno != ENOENT || now_sec() > end) {
			ret = -1;
			break;
		}
		usleep(1000);
	}
	free(b);
	return ret;
}

/* A test exporter buffer of @len bytes holding fill_pattern(@seed). */
static int texp_buffer(int ctl, size_t len, unsigned int flags,
		       unsigned int seed, unsigned char **expect)
{
	int dfd = texp_create(ctl, len, flags);

	*expect = malloc(len);
	if (dfd < 0 || !*expect)
		return -1;
	fill_pattern(*expect, len, seed);
	if (texp_rw(ctl, dfd, 1, 0, *expect, len))
		return -1;
	return dfd;
}

/*
 * A revoke-only buffer (vfio-pci's model): revoked, it is unmapped from
 * every domain and accesses fail with ENODEV; restored, it stays unmapped
 * (a revoke is for good) until it is unmapped and mapped again.
 */
TEST_F(iommufd_dmabuf, revoke_only_buffer_is_unmapped_until_mapped_again)
{
	const size_t len = 64 * PAGE;
	__u32 hwpt[2] = { self->hwpt_id };
	unsigned char *expect, *buf;
	int ctl, dfd, afd;
	__u64 iova;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	dfd = texp_buffer(ctl, len, DMABUF_TEST_F_REVOKE_ONLY, 3, &expect);
	ASSERT_LE(0, dfd);
	buf = malloc(len);
	ASSERT_NE(NULL, buf);
	hwpt[1] = add_domain(self->fd, self->ioas_id);
	ASSERT_NE(0, hwpt[1]);
	afd = access_create(self->fd, self->ioas_id);
	ASSERT_LE(0, afd);

	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, len, &iova));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect, len));
	ASSERT_EQ(0, access_rw(self->fd, afd, iova + 5, buf, 3 * PAGE, 0));
	EXPECT_EQ(0, memcmp(buf, expect + 5, 3 * PAGE));

	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_REVOKE, dfd, 0));
	for (int d = 0; d < 2; d++) {
		EXPECT_ERRNO(ENOENT, md_read(self->fd, hwpt[d], iova, PAGE,
					     buf));
		EXPECT_ERRNO(ENOENT, md_read(self->fd, hwpt[d],
					     iova + len - PAGE, PAGE, buf));
	}
	EXPECT_ERRNO(ENODEV, access_rw(self->fd, afd, iova, buf, PAGE, 0));

	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_RESTORE, dfd, 0));
	usleep(100 * 1000);	/* time for a remap that must not happen */
	for (int d = 0; d < 2; d++)
		EXPECT_ERRNO(ENOENT, md_read(self->fd, hwpt[d], iova, PAGE,
					     buf));
	EXPECT_ERRNO(ENODEV, access_rw(self->fd, afd, iova, buf, PAGE, 0));

	ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova, len));
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, len, &iova));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect, len));
	free(expect);
	free(buf);
	close(afd);
	close(dfd);
	close(ctl);
}

/*
 * A buffer mapped with IOMMU_IOAS_MAP_DMABUF_MOVE: iommufd does not pin it,
 * so the exporter may migrate it; afterwards every IOVA of both domains
 * translates to the new pages (the old ones are poisoned, so a stale
 * translation reads poison), and a write through an access lands in the
 * new pages, none in the retired ones.
 */
TEST_F(iommufd_dmabuf, texp_move_remaps_every_domain_to_the_new_pages)
{
	const size_t len = 64 * PAGE;
	__u32 hwpt[2] = { self->hwpt_id };
	unsigned char *expect, *buf;
	struct dmabuf_test_stats st;
	int ctl, dfd, afd;
	__u64 iova;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	dfd = texp_buffer(ctl, len, 0, 4, &expect);
	ASSERT_LE(0, dfd);
	buf = malloc(len);
	ASSERT_NE(NULL, buf);
	hwpt[1] = add_domain(self->fd, self->ioas_id);
	ASSERT_NE(0, hwpt[1]);
	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, dfd, len, &iova));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect, len));

	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_MIGRATE, dfd, 0));
		for (int d = 0; d < 2; d++)
			ASSERT_EQ(0, md_wait_mapped(self->fd, hwpt[d], iova,
						    len));
		EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect,
					  len));
	}

	/* straight after a move (the access may remap it itself) */
	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_MIGRATE, dfd, 0));
	afd = access_create(self->fd, self->ioas_id);
	ASSERT_LE(0, afd);
	fill_pattern(expect, len, 5);
	ASSERT_EQ(0, access_rw(self->fd, afd, iova, expect, len, 1));
	ASSERT_EQ(0, texp_rw(ctl, dfd, 0, 0, buf, len));
	EXPECT_EQ(0, memcmp(buf, expect, len));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect, len));
	EXPECT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dfd, 0));
	ASSERT_EQ(0, texp_stats(ctl, dfd, &st));
	EXPECT_EQ(4, st.migrations);
	EXPECT_EQ(0, st.pins);
	free(expect);
	free(buf);
	close(afd);
	close(dfd);
	close(ctl);
}

struct mover {
	int ctl, dfd;
	double until;
	unsigned int moves;
	int err;
};

static void *mover_thread(void *arg)
{
	struct mover *m = arg;

	while (now_sec() < m->until && !m->err) {
		if (texp_op(m->ctl, DMABUF_TEST_IOC_MIGRATE, m->dfd, 0))
			m->err = errno ? errno : EIO;
		else
			m->moves++;
	}
	return NULL;
}

/*
 * A storm of moves while accesses read the buffer at random offsets: every
 * read sees the contents (which each move copies), never the poison the
 * exporter leaves behind, and the domains lead to them afterwards.
 */
TEST_F(iommufd_dmabuf, texp_moves_under_access_reads_never_show_poison)
{
	const size_t len = 32 * PAGE;
	unsigned char *expect, *buf;
	struct mover m = { 0 };
	unsigned int reads = 0, bad = 0, errors = 0;
	pthread_t t;
	__u64 iova;
	int afd;

	m.ctl = texp_open();
	if (m.ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	m.dfd = texp_buffer(m.ctl, len, 0, 6, &expect);
	ASSERT_LE(0, m.dfd);
	buf = malloc(len);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, m.dfd, len,
				   &iova));
	afd = access_create(self->fd, self->ioas_id);
	ASSERT_LE(0, afd);

	srand(7);
	m.until = now_sec() + 5;
	ASSERT_EQ(0, pthread_create(&t, NULL, mover_thread, &m));
	while (now_sec() < m.until) {
		size_t off = rand() % len;
		size_t n = 1 + rand() % (len - off);

		if (access_rw(self->fd, afd, iova + off, buf, n, 0))
			errors++;
		else if (memcmp(buf, expect + off, n))
			bad++;
		reads++;
	}
	pthread_join(t, NULL);
	TH_LOG("%u moves, %u reads", m.moves, reads);
	EXPECT_EQ(0, m.err);
	EXPECT_LT(10, m.moves);
	EXPECT_EQ(0, errors);
	EXPECT_EQ(0, bad);
	ASSERT_EQ(0, md_wait_mapped(self->fd, self->hwpt_id, iova, len));
	EXPECT_EQ(0, domains_read(self->fd, &self->hwpt_id, 1, iova, expect,
				  len));
	EXPECT_EQ(0, texp_op(m.ctl, DMABUF_TEST_IOC_CHECK_RETIRED, m.dfd, 0));
	free(expect);
	free(buf);
	close(afd);
	close(m.dfd);
	close(m.ctl);
}

/*
 * A buffer in device memory (a BAR slice, one range marked MMIO): mapped,
 * evicted to system memory and brought back, each time the domains and an
 * access reach the contents, wherever they are.  It takes the start of the
 * BAR, so this program runs before dmabuf_devmem (tests/list), whose data
 * there the host checks after the boot.
 */
TEST_F(iommufd_dmabuf, texp_devmem_buffer_follows_evictions_and_returns)
{
	const size_t len = 16 * PAGE;
	__u32 hwpt[2] = { self->hwpt_id };
	unsigned char *expect, *buf;
	int ctl, dfd, afd;
	__u64 iova;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	dfd = texp_create(ctl, len, DMABUF_TEST_F_DEVMEM);
	if (dfd == -ENODEV)
		SKIP(return, "no device memory bound to the test exporter");
	ASSERT_LE(0, dfd);
	expect = malloc(len);
	buf = malloc(len);
	ASSERT_TRUE(expect && buf);
	fill_pattern(expect, len, 8);
	ASSERT_EQ(0, texp_rw(ctl, dfd, 1, 0, expect, len));
	hwpt[1] = add_domain(self->fd, self->ioas_id);
	ASSERT_NE(0, hwpt[1]);
	afd = access_create(self->fd, self->ioas_id);
	ASSERT_LE(0, afd);

	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, dfd, len, &iova));
	EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect, len));
	ASSERT_EQ(0, access_rw(self->fd, afd, iova, buf, len, 0));
	EXPECT_EQ(0, memcmp(buf, expect, len));

	/* to system memory, back to the BAR */
	for (unsigned int i = 0; i < 2; i++) {
		ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_MIGRATE, dfd, 0));
		for (int d = 0; d < 2; d++)
			ASSERT_EQ(0, md_wait_mapped(self->fd, hwpt[d], iova,
						    len));
		EXPECT_EQ(0, domains_read(self->fd, hwpt, 2, iova, expect,
					  len));
		fill_pattern(expect, len, 9 + i);
		ASSERT_EQ(0, access_rw(self->fd, afd, iova, expect, len, 1));
		ASSERT_EQ(0, texp_rw(ctl, dfd, 0, 0, buf, len));
		EXPECT_EQ(0, memcmp(buf, expect, len));
	}
	EXPECT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dfd, 0));
	free(expect);
	free(buf);
	close(afd);
	close(dfd);
	close(ctl);
}

/*
 * Physical ranges that start and end inside pages cannot be mapped page by
 * page: refused with EINVAL, and nothing is mapped (the IOVA range stays
 * free for the next map).
 */
TEST_F(iommufd_dmabuf, subpage_ranges_are_refused_and_map_nothing)
{
	static const unsigned int pg[] = { 0, 1 };
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE |
			 IOMMU_IOAS_MAP_FIXED_IOVA,
		.ioas_id = self->ioas_id,
		.iova = MOCK_APERTURE_START,
	};
	unsigned char buf[64];
	int ctl, dfd, ufd;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	for (unsigned int pages = 1; pages <= 4; pages++) {
		dfd = texp_create(ctl, pages * PAGE, DMABUF_TEST_F_SUBPAGE);
		ASSERT_LE(0, dfd);
		cmd.fd = dfd;
		cmd.length = pages * PAGE;
		EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
		EXPECT_ERRNO(ENOENT, md_read(self->fd, self->hwpt_id,
					     MOCK_APERTURE_START, sizeof(buf),
					     buf));
		close(dfd);
	}

	ufd = udmabuf_of(self->memfd, pg, 2);
	ASSERT_LE(0, ufd);
	cmd.fd = ufd;
	cmd.length = 2 * PAGE;
	EXPECT_EQ(0, ioctl(self->fd, IOMMU_IOAS_MAP_FILE, &cmd));
	EXPECT_EQ(0, check_map(self->fd, self->hwpt_id, MOCK_APERTURE_START,
			       2 * PAGE, self->map));
	close(ufd);
	close(ctl);
}

/*
 * Without IOMMU_IOAS_MAP_DMABUF_MOVE a buffer is pinned: the exporter cannot
 * move it (EBUSY) and the mapping stays; the flag is refused for exporters
 * that cannot move buffers (udmabuf, a revoke-only buffer) and for memfds,
 * and a mapping made with it cannot be copied to another IOAS.
 */
TEST_F(iommufd_dmabuf, pinned_unless_mapped_to_follow_moves)
{
	static const unsigned int pg[] = { 0 };
	const size_t len = 8 * PAGE;
	struct iommu_ioas_alloc ioas2 = { .size = sizeof(ioas2) };
	struct iommu_ioas_copy copy = {
		.size = sizeof(copy),
		.flags = IOMMU_IOAS_MAP_READABLE,
		.src_ioas_id = self->ioas_id,
		.length = len,
	};
	struct dmabuf_test_stats st;
	unsigned char *expect;
	int ctl, dfd, rfd, ufd;
	__u64 iova;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	dfd = texp_buffer(ctl, len, 0, 11, &expect);
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, len, &iova));
	ASSERT_EQ(0, texp_stats(ctl, dfd, &st));
	EXPECT_EQ(1, st.pins);
	EXPECT_EQ(-EBUSY, texp_op(ctl, DMABUF_TEST_IOC_MIGRATE, dfd, 0));
	EXPECT_EQ(0, domains_read(self->fd, &self->hwpt_id, 1, iova, expect,
				  len));
	ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova, len));
	ASSERT_EQ(0, texp_stats(ctl, dfd, &st));
	EXPECT_EQ(1, st.unpins);
	EXPECT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_MIGRATE, dfd, 0));

	/* a pinned mapping can be copied to another IOAS, a moving one not */
	ASSERT_EQ(0, ioctl(self->fd, IOMMU_IOAS_ALLOC, &ioas2));
	ASSERT_EQ(0, map_file(self->fd, self->ioas_id, dfd, len, &iova));
	copy.src_iova = iova;
	copy.dst_ioas_id = ioas2.out_ioas_id;
	EXPECT_EQ(0, ioctl(self->fd, IOMMU_IOAS_COPY, &copy));
	ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova, len));
	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, dfd, len, &iova));
	copy.src_iova = iova;
	EXPECT_ERRNO(EINVAL, ioctl(self->fd, IOMMU_IOAS_COPY, &copy));
	ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova, len));

	rfd = texp_create(ctl, len, DMABUF_TEST_F_REVOKE_ONLY);
	ASSERT_LE(0, rfd);
	EXPECT_ERRNO(EINVAL, map_file_move(self->fd, self->ioas_id, rfd, len,
					   &iova));
	ufd = udmabuf_of(self->memfd, pg, 1);
	ASSERT_LE(0, ufd);
	EXPECT_ERRNO(EINVAL, map_file_move(self->fd, self->ioas_id, ufd, PAGE,
					   &iova));
	EXPECT_ERRNO(EINVAL, map_file_move(self->fd, self->ioas_id,
					   self->memfd, PAGE, &iova));
	EXPECT_ERRNO(EOPNOTSUPP, map_file_flags(self->fd, self->ioas_id, ufd,
						PAGE, 1U << 31, &iova));
	free(expect);
	close(ufd);
	close(rfd);
	close(dfd);
	close(ctl);
}

struct reader {
	int fd, afd;
	__u64 iova;
	void *buf;
	size_t len;
	int ret;
	int done;
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;

	r->ret = access_rw(r->fd, r->afd, r->iova, r->buf, r->len, 0);
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * A kernel fence (a move still copying) holds up an in-kernel access until
 * it signals: the access never reads memory a move is filling.
 */
TEST_F(iommufd_dmabuf, access_waits_for_the_kernel_fences_of_a_move)
{
	const size_t len = 4 * PAGE;
	unsigned char *expect, *buf;
	struct reader r = { 0 };
	pthread_t t;
	int ctl, dfd;

	ctl = texp_open();
	if (ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	dfd = texp_buffer(ctl, len, 0, 12, &expect);
	ASSERT_LE(0, dfd);
	buf = malloc(len);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, dfd, len,
				   &r.iova));
	r.fd = self->fd;
	r.afd = access_create(self->fd, self->ioas_id);
	ASSERT_LE(0, r.afd);
	r.buf = buf;
	r.len = len;

	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_FENCE_ADD, dfd,
			     DMABUF_TEST_FENCE_KERNEL));
	ASSERT_EQ(0, pthread_create(&t, NULL, reader_thread, &r));
	usleep(300 * 1000);
	EXPECT_EQ(0, __atomic_load_n(&r.done, __ATOMIC_ACQUIRE));
	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_FENCE_SIGNAL, dfd, 0));
	pthread_join(t, NULL);
	EXPECT_EQ(0, r.ret);
	EXPECT_EQ(0, memcmp(buf, expect, len));
	free(expect);
	free(buf);
	close(r.afd);
	close(dfd);
	close(ctl);
}

/*
 * Moves while the buffer is mapped again at other IOVAs, domains come and
 * go, and mappings with a remap still pending are unmapped and their
 * buffers closed: the remap work must neither use an area that is half
 * mapped or unmapped nor outlive the mapping (KASAN and lockdep watch).
 */
TEST_F(iommufd_dmabuf, moves_race_map_unmap_domains_and_close)
{
	const size_t len = 16 * PAGE;
	unsigned char *expect, *tmp;
	struct mover m = { 0 };
	unsigned int rounds = 0;
	pthread_t t;
	__u64 iova;

	m.ctl = texp_open();
	if (m.ctl < 0)
		SKIP(return, "no dma-buf test exporter");
	m.dfd = texp_buffer(m.ctl, len, 0, 13, &expect);
	ASSERT_LE(0, m.dfd);
	ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, m.dfd, len,
				   &iova));

	m.until = now_sec() + 4;
	ASSERT_EQ(0, pthread_create(&t, NULL, mover_thread, &m));
	while (now_sec() < m.until) {
		__u64 iova2;
		int dfd2;

		/* a second mapping of the moving buffer, and a domain */
		ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, m.dfd,
					   len, &iova2));
		if (rounds < 8)
			ASSERT_NE(0, add_domain(self->fd, self->ioas_id));
		ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova2, len));

		/* a buffer moved, then unmapped and closed at once */
		dfd2 = texp_buffer(m.ctl, PAGE, 0, 14, &tmp);
		ASSERT_LE(0, dfd2);
		free(tmp);
		ASSERT_EQ(0, map_file_move(self->fd, self->ioas_id, dfd2,
					   PAGE, &iova2));
		ASSERT_EQ(0, texp_op(m.ctl, DMABUF_TEST_IOC_MIGRATE, dfd2, 0));
		ASSERT_EQ(0, unmap_iova(self->fd, self->ioas_id, iova2, PAGE));
		close(dfd2);
		rounds++;
	}
	pthread_join(t, NULL);
	TH_LOG("%u moves, %u rounds", m.moves, rounds);
	EXPECT_EQ(0, m.err);
	EXPECT_LT(10, m.moves);
	ASSERT_EQ(0, md_wait_mapped(self->fd, self->hwpt_id, iova, len));
	EXPECT_EQ(0, domains_read(self->fd, &self->hwpt_id, 1, iova, expect,
				  len));
	free(expect);
	close(m.dfd);
	close(m.ctl);
}

TEST_HARNESS_MAIN
