// SPDX-License-Identifier: MIT
/*
 * dmabuf-rw-demo: runs in the guest under `make demo`.
 *
 * Reports the environment (the kernel, the NVMe namespace and its IOMMU
 * domain, the dma-buf exporters, io_uring's fixed-buffer opcodes), then
 * moves data by DMA between the disk and two dma-bufs and checks it.
 *
 * On a real machine: dmabuf-rw-demo --destroy-data DEVICE, DEVICE a spare
 * NVMe namespace (/dev/nvmeXnY) that nothing has mounted: the demo writes
 * 8 MiB at 16 MiB of it, destroying what was there, and refuses to run
 * without the flag or on a namespace in use.  In the rig's guest it runs
 * on /dev/nvme0n1 without asking.
 *
 * With device memory (`make demo DEVMEM=switch|root`, dmabufrw_devmem on
 * the kernel command line): the test exporter's buffer in the BAR of
 * QEMU's ivshmem-plain (no struct pages) too.  Behind a PCIe switch the
 * NVMe controller moves the data straight to and from the BAR; the demo
 * checks it through the exporter's CPU copy and the disk, and prints what
 * the host then checks in the BAR's backing file.  On the root bus the
 * registration is refused with EOPNOTSUPP, as documented.
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
#include "dma-buf-test-exporter-uapi.h"

#define TEXP_DEV "/dev/dma_buf_test_exporter"
#define MiB (1ULL << 20)

/* the namespace the demo uses: its path, and its name under /sys/block */
static const char *dev = "/dev/nvme0n1";
static const char *devname = "nvme0n1";

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
 * The demo runs once in a fresh guest and exits: it leaves the release of
 * what it opened to the exit.
 *
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

	fd = open(dev, O_RDWR | O_DIRECT);
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

/* The exporter copies [@off, @off + @len) of its buffer @dbuf to or from @p. */
static int texp_copy(int ctl, int dbuf, int write, uint64_t off, void *p,
		     uint64_t len)
{
	struct dmabuf_test_rw rw = {
		.fd = dbuf,
		.flags = write ? DMABUF_TEST_RW_WRITE : 0,
		.offset = off,
		.len = len,
		.ptr = (uintptr_t)p,
	};

	return ioctl(ctl, DMABUF_TEST_IOC_RW, &rw) ? -errno : 0;
}

/* The first 8-byte word of @p that is not the pattern, or -1. */
static long pattern_bad(const uint64_t *p, size_t len, uint64_t seed,
			uint64_t pos)
{
	for (size_t i = 0; i < len / 8; i++)
		if (p[i] != pattern(seed, pos + i * 8))
			return i * 8;
	return -1;
}

/*
 * Report a read-back of @len bytes into @p (@ret: how the read went) of
 * @what, checked against the pattern of @seed from @pos: 0 if it holds.
 */
static int verify_read(int ret, const char *what, const void *p, size_t len,
		       uint64_t seed, uint64_t pos)
{
	long bad = ret ? -1 : pattern_bad(p, len, seed, pos);

	if (ret)
		printf("  verify:          reading %s: %s\n", what, strerror(-ret));
	else if (bad != -1)
		printf("  verify:          %s: MISMATCH at byte %ld\n", what, bad);
	else
		printf("  verify:          all %zu bytes in %s match\n", len, what);
	return ret || bad != -1;
}

/*
 * The disk's pattern (written by dmabuf_round_trip() at 16 MiB) read into
 * a device-memory buffer with READ_FIXED, checked through the exporter,
 * written from it to another place of the disk with WRITE_FIXED, checked
 * by pread.  The buffer is the first one of the BAR: it starts at its
 * first byte, which the host checks in the backing file (make demo).
 */
static int devmem_round_trip(const char *topo)
{
	const size_t size = 8 * MiB;
	const uint64_t from = 16 * MiB, to = 48 * MiB, seed = 0xdeb0;
	struct dmabuf_test_create c = { .size = size, .flags = DMABUF_TEST_F_DEVMEM };
	bool p2p = !strcmp(topo, "switch");
	struct io_uring ring;
	int ctl, fd, ret;
	void *p = NULL;

	printf("  device memory:   ivshmem-plain BAR 2 %s\n",
	       p2p ? "behind the PCIe switch of the NVMe controller" :
		     "on the root bus (no peer-to-peer DMA to the NVMe controller)");
	ctl = open(TEXP_DEV, O_RDWR | O_CLOEXEC);
	if (ctl < 0 || ioctl(ctl, DMABUF_TEST_IOC_CREATE, &c)) {
		printf("  device memory:   no buffer from %s: %s\n", TEXP_DEV, strerror(errno));
		return 1;
	}
	fd = open(dev, O_RDWR | O_DIRECT);
	ret = fd < 0 ? -errno : posix_memalign(&p, 4096, size) ? -ENOMEM :
	      io_uring_queue_init(8, &ring, 0);
	if (!ret)
		ret = io_uring_register_buffers_sparse(&ring, 1);
	if (ret) {
		printf("  device memory:   setup failed: %s\n", strerror(-ret));
		return 1;
	}
	printf("  dma-buf:         %zu MiB of the BAR from the test exporter (MMIO ranges, no struct pages)\n",
	       size >> 20);
	ret = dmabufrw_register_dmabuf(&ring, 0, c.fd, fd);
	if (!p2p) {
		printf("  registration:    %s (%s)\n", ret ? strerror(-ret) : "accepted",
		       ret == -EOPNOTSUPP ? "refused as documented: the PCI core allows no peer-to-peer DMA here" :
		       "WRONG: expected EOPNOTSUPP");
		return ret != -EOPNOTSUPP;
	}
	if (ret) {
		printf("  registration:    failed: %s\n", strerror(-ret));
		return 1;
	}
	printf("  registration:    slot 0, peer-to-peer DMA by bus address\n");

	ret = dmabufrw_rw_fixed(&ring, 0, fd, 0, 0, size, from);
	printf("  READ_FIXED:      disk offset %llu MiB -> device memory: %d bytes\n",
	       (unsigned long long)from >> 20, ret);
	if (ret != (int)size)
		return 1;
	memset(p, 0, size);
	ret = texp_copy(ctl, c.fd, 0, 0, p, size);
	if (verify_read(ret, "the BAR (read by the exporter with the CPU)",
			p, size, seed, from))
		return 1;
	ret = dmabufrw_rw_fixed(&ring, 1, fd, 0, 0, size, to);
	printf("  WRITE_FIXED:     device memory -> disk offset %llu MiB: %d bytes\n",
	       (unsigned long long)to >> 20, ret);
	if (ret != (int)size)
		return 1;
	memset(p, 0, size);
	ret = pread(fd, p, size, to) == (ssize_t)size ? 0 : -EIO;
	if (verify_read(ret, "the disk (pread)", p, size, seed, from))
		return 1;
	/*
	 * The buffer starts at the BAR's first byte: it is the first one of
	 * the boot, and the exporter places buffers first fit.  The host
	 * check fails if that ever changes.
	 */
	printf("devmem-host-check: offset=0 len=%zu seed=%llu pos=%llu\n", size,
	       (unsigned long long)seed, (unsigned long long)from);
	io_uring_queue_exit(&ring);
	free(p);
	close(c.fd);
	close(ctl);
	close(fd);
	return 0;
}

/*
 * Is @name (a disk under /sys/block), or a partition of it, mounted?
 * /proc/mounts names devices by path; holders (device-mapper, md) count.
 */
static bool in_use(const char *name)
{
	char path[PATH_MAX], line[1024], want[80];
	bool used = false;
	DIR *d;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/holders", name);
	d = opendir(path);
	if (d) {
		struct dirent *e;

		while ((e = readdir(d)))
			used |= e->d_name[0] != '.';
		closedir(d);
	}
	snprintf(want, sizeof(want), "/dev/%s", name);
	f = fopen("/proc/mounts", "r");
	while (f && fgets(line, sizeof(line), f))
		used |= !strncmp(line, want, strlen(want));
	if (f)
		fclose(f);
	return used;
}

int main(int argc, char **argv)
{
	const char *topo = getenv("dmabufrw_devmem");
	char buf[256], link[PATH_MAX], path[PATH_MAX];
	struct io_uring_probe *probe;
	struct utsname u;
	uint64_t size = 0;
	ssize_t n;
	DIR *d;
	int fd;

	/* the rig's guest (tests/guest/init) runs it on its scratch disk */
	if (!getenv("dmabufrw_mode")) {
		if (argc != 3 || strcmp(argv[1], "--destroy-data") ||
		    strncmp(argv[2], "/dev/", 5)) {
			fprintf(stderr, "usage: dmabuf-rw-demo --destroy-data /dev/nvmeXnY\n"
				"  writes 8 MiB at offset 16 MiB of the namespace: use a spare one\n");
			return 2;
		}
		dev = argv[2];
		devname = dev + 5;
		if (in_use(devname)) {
			fprintf(stderr, "dmabuf-rw-demo: %s or one of its partitions is in use\n",
				dev);
			return 2;
		}
	}

	uname(&u);
	printf("dmabuf-rw demo\n");
	printf("  kernel:          %s %s\n", u.release, u.version);

	fd = open(dev, O_RDONLY);
	if (fd < 0) {
		printf("  NVMe namespace:  %s missing (%s)\n", dev, strerror(errno));
		return 1;
	}
	ioctl(fd, BLKGETSIZE64, &size);
	close(fd);
	snprintf(path, sizeof(path), "/sys/block/%s/device/model", devname);
	read_line(path, buf, sizeof(buf));
	printf("  NVMe namespace:  %s, %llu MiB, model \"%s\"\n", dev,
	       (unsigned long long)size >> 20, buf);
	snprintf(path, sizeof(path), "/sys/block/%s/queue/max_hw_sectors_kb", devname);
	if (!read_line(path, buf, sizeof(buf)))
		printf("  queue limits:    max_hw_sectors_kb %s", buf);
	snprintf(path, sizeof(path), "/sys/block/%s/queue/max_segments", devname);
	if (!read_line(path, buf, sizeof(buf)))
		printf(", max_segments %s\n", buf);
	snprintf(path, sizeof(path), "/sys/block/%s/device/device", devname);
	n = readlink(path, link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = 0;
		printf("  PCI device:      %s\n", strrchr(link, '/') + 1);
	}
	snprintf(path, sizeof(path), "/sys/block/%s/device/device/iommu_group/type",
		 devname);
	if (!read_line(path, buf, sizeof(buf)))
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
	if (dmabuf_round_trip())
		return 1;
	return topo ? devmem_round_trip(topo) : 0;
}
