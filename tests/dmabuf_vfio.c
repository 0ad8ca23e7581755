// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf I/O with vfio-pci as the exporter: the upstream exporter of
 * device memory (VFIO_DEVICE_FEATURE_DMA_BUF), here of BAR 2 of a second
 * ivshmem-plain device, which the guest hands to vfio-pci
 * (scripts/run-vm --devmem; tests/guest/init).  vfio-pci revokes its
 * dma-bufs when the device's memory decoding is turned off (or it is
 * reset, or closed) and restores them when decoding is back.
 *
 * Topologies as for dmabuf_devmem: behind the switch with the NVMe
 * controller (no IOMMU: vfio-pci's no-IOMMU mode), the data moves,
 * checked through vfio-pci's own access to the BAR; on the root bus
 * (strict IOMMU), peer-to-peer DMA is not allowed, and dma-buf I/O must
 * refuse with EOPNOTSUPP.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <liburing.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "util.h"
#include "dmabufrw.h"

#define KiB	1024UL
#define MiB	(1024UL * 1024)
#define DISK_POS	(232 * MiB)	/* disk area of these tests */

FIXTURE(vfio) {
	struct io_uring ring;
	int container, group, dev, fd, dbuf;
	bool p2p;
	uint64_t bar_off, bar_len;	/* BAR 2 in the device fd */
	uint64_t cfg_off;		/* config space in the device fd */
};

/* Open the device through its group (an IOMMU group, or a no-IOMMU one). */
static int vfio_open(struct __test_metadata *_metadata,
		     FIXTURE_DATA(vfio) *self, const char *name)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	char path[512], link[512];
	bool noiommu;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", name);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return -errno;
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%s", basename(link));
	noiommu = !access(path, F_OK);
	if (!noiommu)
		snprintf(path, sizeof(path), "/dev/vfio/%s", basename(link));
	self->container = open("/dev/vfio/vfio", O_RDWR);
	if (self->container < 0)
		return -errno;
	self->group = open(path, O_RDWR);
	if (self->group < 0)
		return -errno;
	if (ioctl(self->group, VFIO_GROUP_GET_STATUS, &status))
		return -errno;
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return -EBUSY;
	if (ioctl(self->group, VFIO_GROUP_SET_CONTAINER, &self->container))
		return -errno;
	if (ioctl(self->container, VFIO_SET_IOMMU,
		  noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU))
		return -errno;
	self->dev = ioctl(self->group, VFIO_GROUP_GET_DEVICE_FD, name);
	return self->dev < 0 ? -errno : 0;
}

static int region(int dev, unsigned int index, uint64_t *off, uint64_t *len)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = index };

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &info))
		return -errno;
	*off = info.offset;
	*len = info.size;
	return 0;
}

/* A dma-buf of [@off, @off + @len) of BAR 2, or -errno. */
static int vfio_dmabuf(int dev, uint64_t off, uint64_t len)
{
	uint64_t buf[16] = {};
	struct vfio_device_feature *feat = (void *)buf;
	struct vfio_device_feature_dma_buf *get = (void *)feat->data;
	int ret;

	feat->argsz = sizeof(*feat) + sizeof(*get) + sizeof(get->dma_ranges[0]);
	feat->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
	get->region_index = VFIO_PCI_BAR2_REGION_INDEX;
	get->open_flags = O_RDWR | O_CLOEXEC;
	get->nr_ranges = 1;
	get->dma_ranges[0].offset = off;
	get->dma_ranges[0].length = len;
	ret = ioctl(dev, VFIO_DEVICE_FEATURE, feat);
	return ret < 0 ? -errno : ret;
}

/* Turn the device's memory decoding off or on (config space, PCI_COMMAND). */
static int memory_decode(FIXTURE_DATA(vfio) *self, bool on)
{
	uint16_t cmd;

	if (pread(self->dev, &cmd, 2, self->cfg_off + PCI_COMMAND) != 2)
		return -errno;
	cmd = on ? cmd | PCI_COMMAND_MEMORY : cmd & ~PCI_COMMAND_MEMORY;
	return pwrite(self->dev, &cmd, 2, self->cfg_off + PCI_COMMAND) == 2 ?
	       0 : -errno;
}

FIXTURE_SETUP(vfio)
{
	char name[256];
	int ret;

	self->container = self->group = self->dev = self->fd = self->dbuf = -1;
	REQUIRE_DMABUF_IO();
	REQUIRE_DEVMEM(self->p2p);
	ASSERT_EQ(0, pci_bound_to("vfio-pci", name, sizeof(name)))
		TH_LOG("no device bound to vfio-pci");
	ret = vfio_open(_metadata, self, name);
	ASSERT_EQ(0, ret) TH_LOG("vfio open %s: %s", name, strerror(-ret));
	ASSERT_EQ(0, region(self->dev, VFIO_PCI_BAR2_REGION_INDEX, &self->bar_off,
			    &self->bar_len));
	ASSERT_LE(16 * MiB, self->bar_len);
	ASSERT_EQ(0, region(self->dev, VFIO_PCI_CONFIG_REGION_INDEX, &self->cfg_off,
			    &(uint64_t){ 0 }));
	ASSERT_EQ(0, memory_decode(self, true));
	self->dbuf = vfio_dmabuf(self->dev, 0, self->bar_len);
	ASSERT_LE(0, self->dbuf) TH_LOG("VFIO_DEVICE_FEATURE_DMA_BUF: %s",
					strerror(-self->dbuf));
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 1));
}

FIXTURE_TEARDOWN(vfio)
{
	if (self->fd >= 0) {
		io_uring_queue_exit(&self->ring);
		close(self->fd);
	}
	if (self->dbuf >= 0)
		close(self->dbuf);
	if (self->dev >= 0)
		close(self->dev);
	if (self->group >= 0)
		close(self->group);
	if (self->container >= 0)
		close(self->container);
}

/*
 * Registration of vfio-pci's dma-buf for the namespace: allowed where the
 * PCI core lets the controller reach the BAR (switch), refused with
 * EOPNOTSUPP where it does not (root bus), before any I/O.
 */
static bool vfio_register(struct __test_metadata *_metadata,
			  FIXTURE_DATA(vfio) *self)
{
	int ret = dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd);

	if (self->p2p) {
		EXPECT_EQ(0, ret) TH_LOG("register: %s", strerror(-ret));
		return !ret;
	}
	EXPECT_EQ(-EOPNOTSUPP, ret) TH_LOG("register: %s", strerror(-ret));
	if (!ret)
		EXPECT_EQ(-EOPNOTSUPP, dmabufrw_rw_fixed(&self->ring, false, self->fd,
							 0, 0, 4096, DISK_POS));
	return false;
}

/*
 * NVMe -> BAR and BAR -> NVMe through vfio-pci's dma-buf, 4 KiB to 4 MiB,
 * checked through vfio-pci's own access to the BAR and a pread of the
 * disk.
 */
TEST_F(vfio, nvme_moves_data_to_and_from_vfio_device_memory)
{
	const uint64_t rd = 0x7f10001, wr = 0x7f10002;
	const size_t lens[] = { 4 * KiB, 64 * KiB, MiB, 4 * MiB };

	if (!vfio_register(_metadata, self))
		return;
	ASSERT_EQ(0, pattern_fill_fd(self->fd, DISK_POS, 8 * MiB, rd, DISK_POS));
	for (unsigned int i = 0; i < 4; i++) {
		uint64_t boff = (i + 1) * 4 * MiB - lens[i];

		ASSERT_EQ((int)lens[i], dmabufrw_rw_fixed(&self->ring, false, self->fd,
							  0, boff, lens[i], DISK_POS));
		EXPECT_EQ(-1, pattern_check_fd(self->dev, self->bar_off + boff, lens[i], rd,
				       DISK_POS)) TH_LOG("read of %zu", lens[i]);
		ASSERT_EQ(0, pattern_fill_fd(self->dev, self->bar_off + boff, lens[i], wr,
				     boff));
		ASSERT_EQ((int)lens[i], dmabufrw_rw_fixed(&self->ring, true, self->fd,
							  0, boff, lens[i],
							  DISK_POS + 8 * MiB + boff));
		EXPECT_EQ(-1, pattern_check_fd(self->fd, DISK_POS + 8 * MiB + boff, lens[i],
				       wr, boff)) TH_LOG("write of %zu", lens[i]);
	}
}

/*
 * Memory decoding turned off with 32 reads in flight: vfio-pci revokes
 * the dma-buf, which waits for the I/O in flight; each read completes
 * whole or fails with ENODEV, and I/O fails with ENODEV until decoding is
 * back, when the same registration maps the BAR again and moves data.
 */
TEST_F(vfio, memory_decode_off_revokes_under_io_and_back_on_restores)
{
	const unsigned int n = 32, len = 128 * KiB;
	struct io_uring_cqe *cqe;
	unsigned int whole = 0;

	if (!vfio_register(_metadata, self))
		return;
	ASSERT_EQ(0, pattern_fill_fd(self->fd, DISK_POS, n * len, 0xdec0, DISK_POS));
	for (unsigned int i = 0; i < n; i++)
		io_uring_prep_read_fixed(io_uring_get_sqe(&self->ring), self->fd,
					 (void *)(uintptr_t)(i * len), len,
					 DISK_POS + i * len, 0);
	ASSERT_EQ((int)n, io_uring_submit(&self->ring));
	ASSERT_EQ(0, memory_decode(self, false));
	for (unsigned int i = 0; i < n; i++) {
		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_TRUE(cqe->res == (int)len || cqe->res == -ENODEV)
			TH_LOG("read in flight at revoke: %d", cqe->res);
		whole += cqe->res == (int)len;
		io_uring_cqe_seen(&self->ring, cqe);
	}
	TH_LOG("%u of %u reads done whole before the revoke", whole, n);
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     len, DISK_POS));
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					     len, DISK_POS + 16 * MiB));
	ASSERT_EQ(0, memory_decode(self, true));
	ASSERT_EQ((int)(n * len), dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						    0, n * len, DISK_POS));
	EXPECT_EQ(-1, pattern_check_fd(self->dev, self->bar_off, n * len, 0xdec0, DISK_POS));
}

/*
 * The device closed with the buffer registered: vfio-pci revokes its
 * dma-bufs for good, and the registration's I/O fails with ENODEV; the
 * registration still lets go of the buffer (from a worker, so the test
 * waits for the detach: until then a new registration would share the
 * old attachment), and registering the buffer again fails with ENODEV.
 */
TEST_F(vfio, closing_the_device_revokes_for_good)
{
	unsigned long ino;
	int attached = -1;
	long refs;

	if (!vfio_register(_metadata, self))
		return;
	ino = file_ino(self->dbuf);
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096,
					  DISK_POS));
	close(self->dev);
	self->dev = -1;
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, DISK_POS));
	EXPECT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	for (int i = 0; i < 200; i++) {
		if (!bufinfo(ino, &refs, &attached) && !attached)
			break;
		usleep(50000);
	}
	ASSERT_EQ(0, attached) TH_LOG("the registration was not let go");
	EXPECT_EQ(-ENODEV, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf,
						    self->fd));
}

TEST_HARNESS_MAIN
