// SPDX-License-Identifier: GPL-2.0
/*
 * iommufd maps udmabufs into an IOAS through dma_buf_get_phys(): check,
 * with the iommufd selftest mock domain (CONFIG_IOMMUFD_TEST), that the
 * IOVAs translate to the memfd pages behind the udmabuf, and that a buffer
 * that is not physically contiguous is refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
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

#define PAGE	4096UL

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

static int map_file(int fd, __u32 ioas_id, int dfd, size_t len, __u64 *iova)
{
	struct iommu_ioas_map_file cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas_id,
		.fd = dfd,
		.length = len,
	};
	int ret = ioctl(fd, IOMMU_IOAS_MAP_FILE, &cmd);

	*iova = cmd.iova;
	return ret;
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

/* The same page twice is never contiguous: one range only, so refused. */
TEST_F(iommufd_dmabuf, udmabuf_not_contiguous)
{
	static const unsigned int pg[] = { 1, 1 };
	__u64 iova;
	int dfd;

	dfd = udmabuf_of(self->memfd, pg, 2);
	ASSERT_LE(0, dfd);
	EXPECT_ERRNO(EOPNOTSUPP, map_file(self->fd, self->ioas_id, dfd, 2 * PAGE,
					  &iova));
	close(dfd);
}

/*
 * A one-page system heap buffer is contiguous and maps; its pages are not
 * pinnable through its mmap, so only the mapping itself is checked.
 */
TEST_F(iommufd_dmabuf, heap_one_page)
{
	struct dma_heap_allocation_data alloc = {
		.len = PAGE,
		.fd_flags = O_RDWR | O_CLOEXEC,
	};
	__u64 iova;
	int heap;

	heap = open("/dev/dma_heap/system", O_RDONLY);
	if (heap < 0)
		SKIP(return, "no system heap");
	ASSERT_EQ(0, ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &alloc));
	close(heap);
	EXPECT_EQ(0, map_file(self->fd, self->ioas_id, alloc.fd, PAGE, &iova));
	close(alloc.fd);
}

TEST_HARNESS_MAIN
