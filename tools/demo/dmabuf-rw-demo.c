// SPDX-License-Identifier: MIT
/*
 * dmabuf-rw-demo: runs in the guest under `make demo`.
 *
 * Reports the environment (the kernel, the NVMe namespace and its IOMMU
 * domain, the dma-buf exporters, io_uring's fixed-buffer opcodes), then
 * moves data by DMA between the disk and two dma-bufs and checks it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/dma-buf.h>
#include <liburing.h>

#include "dmabufrw.h"

static int read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (!fgets(buf, size, f))
		buf[0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	for (size_t n = strlen(buf); n && buf[n - 1] == ' '; n--)
		buf[n - 1] = 0;
	fclose(f);
	return 0;
}

static uint64_t pattern(uint64_t seed, uint64_t pos)
{
	uint64_t x = seed ^ (pos * 0x9e3779b97f4a7c15ULL);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ (x >> 29);
}

/*
 * Write a pattern from a udmabuf to the NVMe disk with WRITE_FIXED, read it
 * back into a system-heap dma-buf with READ_FIXED, and check every byte.
 */
static int dmabuf_round_trip(void)
{
	const size_t size = 8 << 20;
	const uint64_t disk_off = 16 << 20, seed = 0xdeb0;
	int memfd, ubuf, heap, fd, ret;
	struct io_uring ring;
	uint64_t *w, *r;
	size_t i;

	fd = open("/dev/nvme0n1", O_RDWR | O_DIRECT);
	ubuf = dmabufrw_alloc_udmabuf(size, &memfd);
	heap = dmabufrw_alloc_heap("system", size);
	if (fd < 0 || ubuf < 0 || heap < 0) {
		printf("  dma-buf I/O:     setup failed\n");
		return 1;
	}
	w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	for (i = 0; i < size / 8; i++)
		w[i] = pattern(seed, disk_off + i * 8);

	if (io_uring_queue_init(8, &ring, 0) ||
	    io_uring_register_buffers_sparse(&ring, 2)) {
		printf("  dma-buf I/O:     io_uring setup failed\n");
		return 1;
	}
	ret = dmabufrw_register_dmabuf(&ring, 0, ubuf, fd);
	if (!ret)
		ret = dmabufrw_register_dmabuf(&ring, 1, heap, fd);
	if (ret) {
		printf("  dma-buf I/O:     registration failed: %s\n", strerror(-ret));
		return 1;
	}
	printf("  dma-buf I/O:     registered udmabuf (slot 0) and system-heap buffer (slot 1), %zu MiB each\n",
	       size >> 20);

	ret = dmabufrw_rw_fixed(&ring, 1, fd, 0, 0, size, disk_off);
	printf("  WRITE_FIXED:     udmabuf -> disk offset %llu MiB: %d bytes\n",
	       (unsigned long long)disk_off >> 20, ret);
	if (ret != (int)size)
		return 1;
	ret = dmabufrw_rw_fixed(&ring, 0, fd, 1, 0, size, disk_off);
	printf("  READ_FIXED:      disk offset %llu MiB -> heap dma-buf: %d bytes\n",
	       (unsigned long long)disk_off >> 20, ret);
	if (ret != (int)size)
		return 1;

	r = mmap(NULL, size, PROT_READ, MAP_SHARED, heap, 0);
	dmabufrw_cpu_begin(heap, DMA_BUF_SYNC_READ);
	for (i = 0; i < size / 8; i++)
		if (r[i] != pattern(seed, disk_off + i * 8))
			break;
	dmabufrw_cpu_end(heap, DMA_BUF_SYNC_READ);
	if (i != size / 8) {
		printf("  verify:          MISMATCH at byte %zu\n", i * 8);
		return 1;
	}
	printf("  verify:          all %zu bytes match\n", size);
	io_uring_queue_exit(&ring);
	return 0;
}

int main(void)
{
	char buf[256], link[PATH_MAX];
	struct io_uring_probe *probe;
	struct utsname u;
	uint64_t size = 0;
	ssize_t n;
	DIR *d;
	int fd;

	uname(&u);
	printf("dmabuf-rw demo\n");
	printf("  kernel:          %s %s\n", u.release, u.version);

	fd = open("/dev/nvme0n1", O_RDONLY);
	if (fd < 0) {
		printf("  NVMe namespace:  /dev/nvme0n1 missing (%s)\n", strerror(errno));
		return 1;
	}
	ioctl(fd, BLKGETSIZE64, &size);
	close(fd);
	read_line("/sys/block/nvme0n1/device/model", buf, sizeof(buf));
	printf("  NVMe namespace:  /dev/nvme0n1, %llu MiB, model \"%s\"\n",
	       (unsigned long long)size >> 20, buf);
	if (!read_line("/sys/block/nvme0n1/queue/max_hw_sectors_kb", buf, sizeof(buf)))
		printf("  queue limits:    max_hw_sectors_kb %s", buf);
	if (!read_line("/sys/block/nvme0n1/queue/max_segments", buf, sizeof(buf)))
		printf(", max_segments %s\n", buf);
	n = readlink("/sys/block/nvme0n1/device/device", link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = 0;
		printf("  PCI device:      %s\n", strrchr(link, '/') + 1);
	}
	if (!read_line("/sys/block/nvme0n1/device/device/iommu_group/type", buf, sizeof(buf)))
		printf("  IOMMU domain:    %s\n", buf);
	else
		printf("  IOMMU domain:    none (no IOMMU)\n");

	fd = dmabufrw_alloc_udmabuf(1 << 20, NULL);
	printf("  udmabuf:         %s\n", fd >= 0 ? "available" : strerror(-fd));
	if (fd >= 0)
		close(fd);
	printf("  dma-heaps:      ");
	d = opendir("/dev/dma_heap");
	if (d) {
		struct dirent *e;

		while ((e = readdir(d)))
			if (e->d_name[0] != '.')
				printf(" %s", e->d_name);
		closedir(d);
	}
	printf("\n");

	probe = io_uring_get_probe();
	if (!probe) {
		printf("  io_uring:        unavailable\n");
		return 1;
	}
	printf("  io_uring:        READ_FIXED %s, WRITE_FIXED %s\n",
	       io_uring_opcode_supported(probe, IORING_OP_READ_FIXED) ? "yes" : "no",
	       io_uring_opcode_supported(probe, IORING_OP_WRITE_FIXED) ? "yes" : "no");
	io_uring_free_probe(probe);
	return dmabuf_round_trip();
}
