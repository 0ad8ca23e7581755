// SPDX-License-Identifier: MIT
/*
 * dmabuf-rw-demo: runs in the guest under `make demo`.
 *
 * For now it reports the environment the feature will run in: the kernel,
 * the NVMe namespace and its IOMMU domain, the dma-buf exporters present and
 * io_uring's fixed-buffer opcodes.
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
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/fs.h>
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
	printf("  dma-buf I/O:     not in this kernel yet\n");
	return 0;
}
