// SPDX-License-Identifier: MIT
/*
 * dmabuf-rw: the command line tool of dmabuf-rw.
 *
 *   dmabuf-rw check [--json] [--source SRC] [--size BYTES] [--offset OFF]
 *                   [--buffered] TARGET
 *	Says whether direct I/O between a dma-buf and TARGET (a block
 *	device, a file or a directory of its file system, or an NVMe
 *	generic device) works on this machine, and by which path (the
 *	device, its IOMMU domain, the memory behind the buffer and whether
 *	the DMA goes peer to peer, the mapping's ranges, SGL or PRP), or
 *	exactly why not, with the errno.  It registers a dma-buf of SRC,
 *	reads SIZE bytes at OFF of TARGET into it with READ_FIXED and checks
 *	them against a plain read: it never writes TARGET.
 *
 *   dmabuf-rw stat [--json] PID[:RINGFD]
 *	Prints the dma-buf slots of a process's io_uring rings (or of one
 *	ring) from their fdinfo: mapping, counters, failures by errno.
 *
 * Exit status: 0 for a working path (check) or slots printed (stat), 1 for
 * a refusal or no ring, 2 for bad usage or a failure of the tool itself.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <endian.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/nvme_ioctl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <liburing.h>

#include "dmabufrw.h"
#include "dma-buf-test-exporter-uapi.h"

#ifndef VFIO_DEVICE_FEATURE_DMA_BUF
/* <linux/vfio.h> of Linux 6.19 and later; the tool builds on older headers */
#define VFIO_DEVICE_FEATURE_DMA_BUF 11

struct vfio_region_dma_range {
	__u64 offset;
	__u64 length;
};

struct vfio_device_feature_dma_buf {
	__u32 region_index;
	__u32 open_flags;
	__u32 flags;
	__u32 nr_ranges;
	struct vfio_region_dma_range dma_ranges[];
};
#endif

#define TEXP_DEV	"/dev/dma_buf_test_exporter"
#define POISON		0xa5

/* --- output: one report, printed as text or as JSON ------------------- */

#define MAX_FIELDS	64

struct field {
	char key[40];
	char val[512];
	bool num;
};

static struct field fields[MAX_FIELDS];
static int nr_fields;
static bool json;

static void put(bool num, const char *key, const char *fmt, ...)
{
	struct field *f;
	va_list ap;

	if (nr_fields == MAX_FIELDS)
		return;
	f = &fields[nr_fields++];
	snprintf(f->key, sizeof(f->key), "%s", key);
	va_start(ap, fmt);
	vsnprintf(f->val, sizeof(f->val), fmt, ap);
	va_end(ap);
	f->num = num;
}

#define put_str(key, ...)	put(false, key, __VA_ARGS__)
#define put_num(key, ...)	put(true, key, __VA_ARGS__)

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(out, "\\u%04x", *s);
		else
			fputc(*s, out);
	}
	fputc('"', out);
}

static void print_report(void)
{
	int i;

	if (!json) {
		for (i = 0; i < nr_fields; i++)
			printf("%-16s %s\n", fields[i].key, fields[i].val);
		return;
	}
	printf("{");
	for (i = 0; i < nr_fields; i++) {
		printf("%s", i ? ", " : "");
		json_string(stdout, fields[i].key);
		printf(": ");
		if (fields[i].num)
			printf("%s", fields[i].val);
		else
			json_string(stdout, fields[i].val);
	}
	printf("}\n");
}

/* --- small helpers ----------------------------------------------------- */

static int read_line(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (!f)
		return -1;
	if (!fgets(buf, size, f))
		buf[0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	fclose(f);
	return 0;
}

/* The last component of the symbolic link @path, in @buf; NULL if none. */
static const char *link_name(const char *path, char *buf, size_t size)
{
	ssize_t n = readlink(path, buf, size - 1);
	char *p;

	if (n < 0)
		return NULL;
	buf[n] = 0;
	p = strrchr(buf, '/');
	return p ? p + 1 : buf;
}

static const char *errno_name(int err)
{
	switch (err) {
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EBADF: return "EBADF";
	case EACCES: return "EACCES";
	case EAGAIN: return "EAGAIN";
	case ENODEV: return "ENODEV";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	case EIO: return "EIO";
	case EPERM: return "EPERM";
	case EBUSY: return "EBUSY";
	case ENOTTY: return "ENOTTY";
	case EROFS: return "EROFS";
	case ENXIO: return "ENXIO";
	case EREMOTEIO: return "EREMOTEIO";
	default: return "E?";
	}
}

/* --- the target -------------------------------------------------------- */

struct target {
	const char *path;
	int fd;
	bool direct;
	struct stat st;
	const char *kind;	/* "block device", "file", "directory", ... */
	char disk[64];		/* the whole disk behind it: nvme0n1 */
	char fstype[32];
	uint64_t size;
	unsigned int lbs;	/* logical block size */
};

static const char *fs_name(long type)
{
	switch (type) {
	case EXT4_SUPER_MAGIC: return "ext4";
	case XFS_SUPER_MAGIC: return "xfs";
	case BTRFS_SUPER_MAGIC: return "btrfs";
	case TMPFS_MAGIC: return "tmpfs";
	case 0x65735546: return "fuse";
	case NFS_SUPER_MAGIC: return "nfs";
	case 0xf2f52010: return "f2fs";
	case 0x2011bab0: return "exfat";
	case MSDOS_SUPER_MAGIC: return "vfat";
	default: return "other";
	}
}

/* The disk (not the partition) of block device number @dev, into t->disk. */
static void target_disk(struct target *t, dev_t dev)
{
	char path[PATH_MAX], link[PATH_MAX], *p;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(dev),
		 minor(dev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return;
	link[n] = 0;
	/* .../block/nvme0n1/nvme0n1p1 for a partition */
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/partition",
		 major(dev), minor(dev));
	if (!access(path, F_OK)) {
		p = strrchr(link, '/');
		if (p)
			*p = 0;
	}
	p = strrchr(link, '/');
	snprintf(t->disk, sizeof(t->disk), "%.63s", p ? p + 1 : link);
}

static unsigned int queue_attr(const char *disk, const char *attr)
{
	char path[PATH_MAX], buf[64];

	snprintf(path, sizeof(path), "/sys/block/%s/queue/%s", disk, attr);
	if (read_line(path, buf, sizeof(buf)))
		return 0;
	return strtoul(buf, NULL, 10);
}

/* --- the dma-buf ------------------------------------------------------- */

struct source {
	const char *name;	/* udmabuf, heap:system, texp, texp-devmem, vfio:BDF */
	int fd;
	int memfd;		/* udmabuf: the CPU view */
	int texp;		/* test exporter control */
	int vfio;		/* vfio-pci: the device, whose fd reads the BAR */
	uint64_t bar_off;	/* vfio-pci: the BAR's region in the device fd */
	size_t size;
	char why[320];		/* why the allocation failed, if it says */
};

static void source_why(struct source *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
}

/* Is BAR @bar of PCI device @bdf prefetchable memory (sysfs resource flags)? */
static bool bar_prefetchable(const char *bdf, int bar)
{
	unsigned long long start, end, flags = 0;
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource", bdf);
	f = fopen(path, "r");
	if (!f)
		return false;
	for (int i = 0; i <= bar; i++)
		if (fscanf(f, "%llx %llx %llx", &start, &end, &flags) != 3)
			flags = 0;
	fclose(f);
	/* IORESOURCE_MEM | IORESOURCE_PREFETCH */
	return (flags & 0x2200) == 0x2200;
}

/*
 * vfio:PCI[:BAR]: a dma-buf of the first SIZE bytes of a BAR of a PCI
 * device bound to vfio-pci or one of its variant drivers
 * (VFIO_DEVICE_FEATURE_DMA_BUF).  Without BAR, the largest prefetchable
 * memory BAR: device memory, never a register block.  The device is opened
 * through its IOMMU group (or its no-IOMMU group), as a VMM would.
 * Returns 0 or -errno with s->why, which names the step that failed.
 */
static int source_vfio(struct source *s, const char *spec)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_region_info info;
	uint64_t buf[8] = {};
	struct vfio_device_feature *feat = (void *)buf;
	struct vfio_device_feature_dma_buf *get = (void *)feat->data;
	char bdf[32], path[PATH_MAX], link[PATH_MAX], *end;
	const char *grp, *drv, *p;
	int container, group, colons = 0, bar = -1, err;
	uint64_t bar_size = 0;
	uint16_t cmd;
	bool noiommu;

	/* [DDDD:]BB:DD.F, then :BAR */
	for (p = spec; *p && *p != '.'; p++)
		colons += *p == ':';
	if (*p != '.' || colons < 1 || colons > 2 || !isxdigit((unsigned char)p[1]) ||
	    (p[2] && p[2] != ':')) {
		source_why(s, "vfio:%s: give the device as vfio:DDDD:BB:DD.F[:BAR]", spec);
		return -EINVAL;
	}
	snprintf(bdf, sizeof(bdf), "%s%.*s", colons == 1 ? "0000:" : "",
		 (int)(p + 2 - spec), spec);
	for (char *c = bdf; *c; c++)
		*c = tolower((unsigned char)*c);
	if (p[2]) {
		long v = isdigit((unsigned char)p[3]) ? strtol(p + 3, &end, 10) : -1;

		if (v < VFIO_PCI_BAR0_REGION_INDEX || v > VFIO_PCI_BAR5_REGION_INDEX || *end) {
			source_why(s, "vfio:%s: the BAR is a number from 0 to 5", spec);
			return -EINVAL;
		}
		bar = v;
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", bdf);
	drv = link_name(path, link, sizeof(link));
	if (!drv) {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", bdf);
		source_why(s, access(path, F_OK) ? "no PCI device %s" :
			   "%s has no driver: bind it to vfio-pci (driver_override)", bdf);
		return -ENODEV;
	}
	/* vfio-pci and its variants: nvgrace-gpu-vfio-pci, mlx5_vfio_pci, ... */
	if (!strstr(drv, "vfio")) {
		source_why(s, "%s is bound to %s, not to vfio-pci: only vfio-pci "
			   "exports a device's BARs as dma-bufs", bdf, drv);
		return -ENODEV;
	}

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	grp = link_name(path, link, sizeof(link));
	if (!grp) {
		source_why(s, "%s has no IOMMU group (nor a no-IOMMU one)", bdf);
		return -ENODEV;
	}
	snprintf(path, sizeof(path), "/dev/vfio/noiommu-%s", grp);
	noiommu = !access(path, F_OK);
	if (!noiommu)
		snprintf(path, sizeof(path), "/dev/vfio/%s", grp);
	container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	group = container < 0 ? -1 : open(path, O_RDWR | O_CLOEXEC);
	if (group < 0) {
		err = errno;
		source_why(s, "cannot open %s: %s%s", container < 0 ? "/dev/vfio/vfio" : path,
			   strerror(err), err == EBUSY ? " (another process has the group)" :
			   err == EPERM || err == EACCES ? " (needs root; a no-IOMMU "
			   "group needs CAP_SYS_RAWIO)" : "");
		return -err;
	}
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &status)) {
		err = errno;
		source_why(s, "VFIO_GROUP_GET_STATUS: %s", strerror(err));
		return -err;
	}
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		source_why(s, "IOMMU group %s is not viable: another device of the "
			   "group is bound to a host driver", grp);
		return -EBUSY;
	}
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
	    ioctl(container, VFIO_SET_IOMMU,
		  noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU)) {
		err = errno;
		source_why(s, "cannot set up the vfio container for group %s: %s",
			   grp, strerror(err));
		return -err;
	}
	s->vfio = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (s->vfio < 0) {
		err = errno;
		source_why(s, "VFIO_GROUP_GET_DEVICE_FD %s: %s", bdf, strerror(err));
		return -err;
	}

	/* the BAR: the one asked for, or the largest prefetchable one */
	for (int i = VFIO_PCI_BAR0_REGION_INDEX; i <= VFIO_PCI_BAR5_REGION_INDEX; i++) {
		if (bar >= 0 ? i != bar : !bar_prefetchable(bdf, i))
			continue;
		info = (struct vfio_region_info){ .argsz = sizeof(info), .index = i };
		if (ioctl(s->vfio, VFIO_DEVICE_GET_REGION_INFO, &info) ||
		    info.size <= bar_size)
			continue;
		bar_size = info.size;
		s->bar_off = info.offset;
		get->region_index = i;
	}
	if (!bar_size) {
		if (bar < 0)
			source_why(s, "%s has no prefetchable memory BAR: name one "
				   "(vfio:%s:BAR)", bdf, bdf);
		else
			source_why(s, "BAR %d of %s is not implemented (or is the upper "
				   "half of a 64-bit BAR)", bar, bdf);
		return -EINVAL;
	}
	if (bar_size < s->size) {
		source_why(s, "BAR %u of %s has %llu bytes, fewer than the %zu the probe "
			   "needs", get->region_index, bdf, (unsigned long long)bar_size,
			   s->size);
		return -EINVAL;
	}
	put_num("bar", "%u", get->region_index);

	/* vfio-pci revokes its dma-bufs while memory decoding is off */
	info = (struct vfio_region_info){ .argsz = sizeof(info),
					  .index = VFIO_PCI_CONFIG_REGION_INDEX };
	if (ioctl(s->vfio, VFIO_DEVICE_GET_REGION_INFO, &info) ||
	    pread(s->vfio, &cmd, 2, info.offset + PCI_COMMAND) != 2) {
		err = errno ? errno : EIO;
		source_why(s, "cannot read the command register of %s: %s", bdf,
			   strerror(err));
		return -err;
	}
	if (!(le16toh(cmd) & PCI_COMMAND_MEMORY)) {
		cmd = htole16(le16toh(cmd) | PCI_COMMAND_MEMORY);
		if (pwrite(s->vfio, &cmd, 2, info.offset + PCI_COMMAND) != 2) {
			err = errno ? errno : EIO;
			source_why(s, "cannot turn on memory decoding of %s: %s", bdf,
				   strerror(err));
			return -err;
		}
	}

	feat->argsz = sizeof(*feat) + sizeof(*get) + sizeof(get->dma_ranges[0]);
	feat->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
	get->open_flags = O_RDWR | O_CLOEXEC;
	get->nr_ranges = 1;
	get->dma_ranges[0].offset = 0;
	get->dma_ranges[0].length = s->size;
	s->fd = ioctl(s->vfio, VFIO_DEVICE_FEATURE, feat);
	if (s->fd < 0) {
		err = errno;
		source_why(s, "VFIO_DEVICE_FEATURE_DMA_BUF of BAR %u of %s: %s%s",
			   get->region_index, bdf, strerror(err),
			   err == ENOTTY || err == EINVAL ? " (vfio-pci exports BARs as "
			   "dma-bufs from Linux 6.19)" : err == EOPNOTSUPP ?
			   " (this driver does not export its BARs)" : "");
		return -err;
	}
	return 0;
}

static int source_alloc(struct source *s)
{
	s->memfd = -1;
	s->texp = -1;
	s->vfio = -1;
	if (!strncmp(s->name, "vfio:", 5)) {
		return source_vfio(s, s->name + 5);
	} else if (!strcmp(s->name, "udmabuf")) {
		s->fd = dmabufrw_alloc_udmabuf(s->size, &s->memfd);
	} else if (!strncmp(s->name, "heap", 4)) {
		const char *heap = s->name[4] == ':' ? s->name + 5 : "system";

		s->fd = dmabufrw_alloc_heap(heap, s->size);
	} else if (!strcmp(s->name, "texp") || !strcmp(s->name, "texp-devmem")) {
		struct dmabuf_test_create c = {
			.size = s->size,
			.flags = strcmp(s->name, "texp") ? DMABUF_TEST_F_DEVMEM : 0,
		};

		s->texp = open(TEXP_DEV, O_RDWR | O_CLOEXEC);
		if (s->texp < 0)
			return -errno;
		s->fd = ioctl(s->texp, DMABUF_TEST_IOC_CREATE, &c) ? -errno : c.fd;
	} else {
		return -EINVAL;
	}
	return s->fd < 0 ? s->fd : 0;
}

/* Fill the buffer through the CPU, or read it back; -EOPNOTSUPP if it cannot. */
static int source_cpu(struct source *s, bool write, void *buf, size_t len)
{
	if (s->memfd >= 0) {
		ssize_t n = write ? pwrite(s->memfd, buf, len, 0) :
				    pread(s->memfd, buf, len, 0);

		return n == (ssize_t)len ? 0 : -EIO;
	}
	if (s->vfio >= 0) {
		ssize_t n = write ? pwrite(s->vfio, buf, len, s->bar_off) :
				    pread(s->vfio, buf, len, s->bar_off);

		return n == (ssize_t)len ? 0 : -EIO;
	}
	if (s->texp >= 0) {
		struct dmabuf_test_rw rw = {
			.fd = s->fd,
			.flags = write ? DMABUF_TEST_RW_WRITE : 0,
			.offset = 0,
			.len = len,
			.ptr = (uintptr_t)buf,
		};

		return ioctl(s->texp, DMABUF_TEST_IOC_RW, &rw) ? -errno : 0;
	}
	/* an exporter with a CPU mapping (the heaps) */
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
	uint64_t flags = DMA_BUF_SYNC_RW;

	if (map == MAP_FAILED)
		return -EOPNOTSUPP;
	dmabufrw_cpu_begin(s->fd, flags);
	if (write)
		memcpy(map, buf, len);
	else
		memcpy(buf, map, len);
	dmabufrw_cpu_end(s->fd, flags);
	munmap(map, len);
	return 0;
}

/* --- check ------------------------------------------------------------- */

static void refuse(const char *step, int err, const char *fmt, ...)
{
	char reason[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	put_str("result", "refused");
	put_str("step", "%s", step);
	put_str("errno", "%s", errno_name(err));
	put_num("errno_value", "%d", err);
	put_str("reason", "%s", reason);
}

/* The IOMMU domain of PCI device @dev, as the kernel names its type. */
static void put_iommu(const char *dev)
{
	char path[PATH_MAX], type[64];

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group/type", dev);
	if (read_line(path, type, sizeof(type)) || !type[0]) {
		put_str("iommu", "none (the device's DMA addresses are physical addresses)");
		return;
	}
	if (!strcmp(type, "DMA"))
		put_str("iommu", "DMA (strict: translated, unmapped at once)");
	else if (!strcmp(type, "DMA-FQ"))
		put_str("iommu", "DMA-FQ (lazy: translated, unmap flushed in batches)");
	else if (!strcmp(type, "identity"))
		put_str("iommu", "identity (passthrough)");
	else
		put_str("iommu", "%s", type);
}

/*
 * Does the NVMe controller of @disk take SGLs?  Identify Controller, SGLS
 * (bytes 536-539), bits 1:0.  -1 if it cannot be asked (not root, not NVMe).
 */
static int nvme_sgl_support(const char *disk)
{
	struct nvme_admin_cmd cmd = {
		.opcode = 0x06,		/* Identify */
		.cdw10 = 1,		/* CNS 1: the controller */
		.data_len = 4096,
	};
	char path[PATH_MAX], link[PATH_MAX];
	const char *ctrl;
	unsigned char *id;
	int fd, ret = -1;

	snprintf(path, sizeof(path), "/sys/block/%s/device", disk);
	ctrl = link_name(path, link, sizeof(link));
	if (!ctrl)
		return -1;
	snprintf(path, sizeof(path), "/dev/%.64s", ctrl);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	id = aligned_alloc(4096, 4096);
	cmd.addr = (uintptr_t)id;
	if (id && !ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd))
		ret = (id[536] & 3) != 0;
	free(id);
	close(fd);
	return ret;
}

/* What the NVMe driver puts in the command's data pointer for the probe. */
static void put_data_pointer(const char *disk, long ranges, size_t len)
{
	char buf[64];
	unsigned long threshold = 32768;
	int sgl;

	if (strncmp(disk, "nvme", 4))
		return;
	sgl = nvme_sgl_support(disk);
	if (!read_line("/sys/module/nvme/parameters/sgl_threshold", buf, sizeof(buf)))
		threshold = strtoul(buf, NULL, 10);
	if (sgl < 0) {
		put_str("data_pointer", "unknown (Identify Controller needs root)");
	} else if (!sgl) {
		put_str("data_pointer", "PRP (the controller has no SGLs)");
	} else {
		size_t avg = ranges > 0 ? len / ranges : len;

		put_str("data_pointer", "%s (SGLs supported; the driver uses them for "
			"segments of %lu bytes and more, and for passthrough commands)",
			threshold && avg >= threshold ? "SGL" : "PRP", threshold);
	}
}

static int check(struct source *src, const char *path, uint64_t off,
		 size_t len, bool buffered)
{
	struct target t = { .path = path, .fd = -1 };
	char line[1024], val[512], dev[64];
	struct io_uring ring;
	struct utsname u;
	struct statfs sfs;
	int ret, rfd = -1;
	void *want = NULL, *got = NULL;
	bool chr;

	uname(&u);
	put_str("kernel", "%s", u.release);
	put_str("source", "%s", src->name);
	put_str("target", "%s", path);

	ret = io_uring_queue_init(4, &ring, 0);
	if (ret) {
		refuse("kernel", -ret, "no io_uring: %s", strerror(-ret));
		return 1;
	}
	if (!dmabufrw_supported(&ring)) {
		refuse("kernel", EOPNOTSUPP, "the kernel cannot register dma-bufs as "
		       "io_uring buffers (no IORING_FEAT_REGBUF_DMABUF): it is not "
		       "built with the dmabuf-rw series");
		return 1;
	}
	ret = io_uring_register_buffers_sparse(&ring, 2);
	if (ret) {
		refuse("kernel", -ret, "no sparse buffer table: %s", strerror(-ret));
		return 1;
	}

	/* the target, opened as the user would for direct I/O */
	if (stat(path, &t.st)) {
		refuse("open", errno, "%s: %s", path, strerror(errno));
		return 1;
	}
	chr = S_ISCHR(t.st.st_mode);
	t.direct = !buffered && !chr && !S_ISDIR(t.st.st_mode);
	if (S_ISBLK(t.st.st_mode))
		t.kind = "block device";
	else if (chr)
		t.kind = "character device";
	else if (S_ISDIR(t.st.st_mode))
		t.kind = "directory";
	else
		t.kind = "file";
	put_str("target_kind", "%s%s", t.kind, t.direct ? " (O_DIRECT)" : "");
	if (S_ISDIR(t.st.st_mode))
		t.fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	else
		t.fd = open(path, O_RDONLY | O_CLOEXEC | (t.direct ? O_DIRECT : 0));
	if (t.fd < 0) {
		int err = errno;

		refuse("open", err, err == EINVAL && t.direct ?
		       "the file system cannot open files for direct I/O (O_DIRECT)" :
		       "%s: %s", path, strerror(err));
		return 1;
	}
	if (!fstatfs(t.fd, &sfs) && !S_ISBLK(t.st.st_mode) && !chr) {
		snprintf(t.fstype, sizeof(t.fstype), "%s", fs_name(sfs.f_type));
		put_str("filesystem", "%s", t.fstype);
	}
	target_disk(&t, S_ISBLK(t.st.st_mode) ? t.st.st_rdev : t.st.st_dev);
	if (t.disk[0]) {
		put_str("disk", "%s", t.disk);
		t.lbs = queue_attr(t.disk, "logical_block_size");
		put_num("logical_block", "%u", t.lbs);
		put_num("max_transfer_kb", "%u", queue_attr(t.disk, "max_hw_sectors_kb"));
		put_num("max_segments", "%u", queue_attr(t.disk, "max_segments"));
		put_num("dma_alignment", "%u", queue_attr(t.disk, "dma_alignment") + 1);
	}

	/* the dma-buf */
	ret = source_alloc(src);
	if (ret) {
		if (src->why[0])
			refuse("source", -ret, "%s", src->why);
		else
			refuse("source", -ret, "cannot allocate a %zu-byte dma-buf from %s: %s",
			       src->size, src->name, strerror(-ret));
		return 1;
	}

	/* the registration */
	ret = dmabufrw_register_dmabuf(&ring, 0, src->fd, t.fd);
	if (ret) {
		int err = -ret;

		if (err == EINVAL && !t.direct && !chr && !S_ISDIR(t.st.st_mode)) {
			refuse("register", err, "the target is not open for direct I/O: "
			       "a dma-buf serves only O_DIRECT files and block devices");
		} else if (err == EOPNOTSUPP) {
			int ub = -1, memfd, probe;

			/* the target, or the source's memory? */
			if (strcmp(src->name, "udmabuf")) {
				ub = dmabufrw_alloc_udmabuf(1 << 20, &memfd);
				probe = ub >= 0 ? dmabufrw_register_dmabuf(&ring, 1, ub, t.fd) : ub;
				if (ub >= 0) {
					close(memfd);
					close(ub);
				}
			} else {
				probe = ret;
			}
			if (!probe)
				refuse("register", err, "the exporter cannot map this buffer "
				       "for the storage device: its memory is device memory "
				       "and no peer-to-peer DMA path joins the two devices "
				       "(topology without P2P), while system memory registers");
			else if (t.fstype[0])
				refuse("register", err, "%s does not take dma-buf registrations "
				       "(no dmabuf_io_create: ext4 and XFS do)", t.fstype);
			else
				refuse("register", err, "%s (%s) does not take dma-buf "
				       "registrations (its driver has no dmabuf_io_create: NVMe does)",
				       t.disk[0] ? t.disk : path, t.kind);
		} else if (err == EACCES) {
			refuse("register", err, "no direction allowed: the dma-buf's and "
			       "the target's open modes exclude reads and writes");
		} else {
			refuse("register", err, "registration refused: %s", strerror(err));
		}
		return 1;
	}
	put_str("registered", "yes");

	if (chr || S_ISDIR(t.st.st_mode)) {
		/* passthrough needs SQE128 rings; a directory serves its files */
		put_str("result", "ok");
		put_str("probe", "registration only (%s)", chr ?
			"passthrough commands: dmabufrw_prep_nvme_read_dmabuf()" :
			"I/O goes to the directory's files");
		goto path;
	}

	/* the probe: a read of the target into the poisoned buffer */
	if (S_ISBLK(t.st.st_mode))
		ioctl(t.fd, BLKGETSIZE64, &t.size);
	else
		t.size = t.st.st_size;
	if (off + len > t.size) {
		refuse("io", EINVAL, "the target has %llu bytes, the probe reads %zu at %llu: "
		       "choose --offset and --size within it", (unsigned long long)t.size,
		       len, (unsigned long long)off);
		return 1;
	}
	want = aligned_alloc(4096, len);
	got = aligned_alloc(4096, len);
	if (!want || !got)
		return 2;
	memset(got, POISON, len);
	ret = source_cpu(src, true, got, len);
	if (ret && ret != -EOPNOTSUPP) {
		refuse("source", -ret, "cannot fill the dma-buf through the CPU: %s",
		       strerror(-ret));
		return 1;
	}
	ret = dmabufrw_rw_fixed(&ring, 0, t.fd, 0, 0, len, off);
	if (ret < 0) {
		int err = -ret;

		if (err == EINVAL)
			refuse("io", err, "the I/O does not fit the device: offset and "
			       "size must be multiples of the logical block (%u), within "
			       "its limits", t.lbs);
		else if (err == EOPNOTSUPP)
			refuse("io", err, "the file's blocks cannot all be reached by DMA "
			       "(a hole or unwritten range the CPU would have to zero, "
			       "inline data, or a device the buffer is not mapped for)");
		else if (err == ENODEV)
			refuse("io", err, "the exporter revoked the buffer, or the device "
			       "went away");
		else
			refuse("io", err, "READ_FIXED failed: %s", strerror(err));
		return 1;
	}
	if ((size_t)ret != len) {
		refuse("io", EIO, "short read: %d of %zu bytes", ret, len);
		return 1;
	}
	put_num("io_bytes", "%zu", len);

	/* did the data arrive? */
	rfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (rfd < 0 || pread(rfd, want, len, off) != (ssize_t)len) {
		put_str("verified", "no (cannot read the target again)");
	} else {
		ret = source_cpu(src, false, got, len);
		if (ret == -EOPNOTSUPP) {
			put_str("verified", "no (the exporter gives the CPU no access)");
		} else if (ret) {
			put_str("verified", "no (%s)", strerror(-ret));
		} else if (memcmp(want, got, len)) {
			refuse("verify", EIO, "READ_FIXED succeeded but the buffer does not "
			       "hold the file's data");
			return 1;
		} else {
			put_str("verified", "yes (the buffer holds the data a plain read returns)");
		}
	}
	put_str("result", "ok");

path:
	/* the path the I/O took, from the ring's fdinfo */
	if (dmabufrw_slot_fdinfo(0, ring.ring_fd, 0, line, sizeof(line)))
		return 0;
	dmabufrw_fdinfo_value(line, "dev", dev, sizeof(dev));
	put_str("dma_device", "%s", dev);
	put_iommu(dev);
	dmabufrw_fdinfo_value(line, "exp", val, sizeof(val));
	put_str("exporter", "%s", val);
	dmabufrw_fdinfo_value(line, "dma", val, sizeof(val));
	put_str("dma_directions", "%s", val);
	if (!dmabufrw_fdinfo_value(line, "mem", val, sizeof(val))) {
		bool devmem = !strcmp(val, "device");

		put_str("memory", "%s", devmem ?
			"device memory (no struct pages): the DMA goes peer to peer" :
			"system memory");
		dmabufrw_fdinfo_value(line, "ranges", val, sizeof(val));
		put_num("mapping_ranges", "%s", val);
		put_data_pointer(t.disk, strtol(val, NULL, 10), len);
		dmabufrw_fdinfo_value(line, "sync", val, sizeof(val));
		put_str("cpu_syncs", "%s", val);
	}
	dmabufrw_fdinfo_value(line, "gen", val, sizeof(val));
	put_num("mappings", "%s", val);
	free(want);
	free(got);
	if (rfd >= 0)
		close(rfd);
	return 0;
}

/* --- stat -------------------------------------------------------------- */

static bool is_ring(pid_t pid, int fd)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = 0;
	return !strcmp(link, "anon_inode:[io_uring]");
}

static const char *const stat_keys[] = {
	"offset", "len", "dev", "ino", "exp", "size", "dma", "state", "gen",
	"ranges", "mem", "sync", "invalidations", "map_errors", "users", "ios",
	"bytes", "failed", "target", "file",
};

/* Print the dma-buf slots of one ring; returns how many. */
static int stat_ring(pid_t pid, int ring_fd, bool *first)
{
	char path[64], buf[1024], val[512];
	unsigned int idx;
	int n = 0, off;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, ring_fd);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f)) {
		const char *line;

		if (sscanf(buf, "%u: dmabuf %n", &idx, &off) != 1 || !off)
			continue;
		buf[strcspn(buf, "\n")] = 0;
		line = buf + off;
		if (json) {
			printf("%s{\"pid\": %d, \"ring_fd\": %d, \"slot\": %u",
			       *first ? "" : ",\n ", pid, ring_fd, idx);
			for (size_t i = 0; i < sizeof(stat_keys) / sizeof(*stat_keys); i++) {
				if (dmabufrw_fdinfo_value(line, stat_keys[i], val,
							  sizeof(val)))
					continue;
				printf(", ");
				json_string(stdout, stat_keys[i]);
				printf(": ");
				json_string(stdout, val);
			}
			printf("}");
		} else {
			printf("pid %d ring fd %d slot %u:\n", pid, ring_fd, idx);
			for (size_t i = 0; i < sizeof(stat_keys) / sizeof(*stat_keys); i++)
				if (!dmabufrw_fdinfo_value(line, stat_keys[i], val,
							  sizeof(val)))
					printf("  %-14s %s\n", stat_keys[i], val);
		}
		*first = false;
		n++;
	}
	fclose(f);
	return n;
}

static int do_stat(const char *arg)
{
	char *end;
	long pid = strtol(arg, &end, 10);
	bool first = true;
	int rings = 0, slots = 0;

	if (pid <= 0 || (*end && *end != ':')) {
		fprintf(stderr, "dmabuf-rw stat: PID or PID:RINGFD expected, not %s\n", arg);
		return 2;
	}
	if (json)
		printf("[");
	if (*end == ':') {
		int fd = atoi(end + 1);

		if (is_ring(pid, fd)) {
			rings++;
			slots += stat_ring(pid, fd, &first);
		}
	} else {
		char path[64];
		struct dirent *d;
		DIR *dir;

		snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
		dir = opendir(path);
		if (!dir) {
			if (json)
				printf("]\n");
			fprintf(stderr, "dmabuf-rw stat: %s: %s\n", path, strerror(errno));
			return 1;
		}
		while ((d = readdir(dir)))
			if (isdigit(d->d_name[0]) && is_ring(pid, atoi(d->d_name))) {
				rings++;
				slots += stat_ring(pid, atoi(d->d_name), &first);
			}
		closedir(dir);
	}
	if (json)
		printf("]\n");
	else if (!slots)
		printf("pid %ld: %d io_uring ring%s, no dma-buf slots\n", pid, rings,
		       rings == 1 ? "" : "s");
	return rings ? 0 : 1;
}

/* --- main -------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: dmabuf-rw check [--json]\n"
		"                       [--source udmabuf|heap[:NAME]|texp|texp-devmem|vfio:PCI[:BAR]]\n"
		"                       [--size BYTES] [--offset BYTES] [--buffered] TARGET\n"
		"       dmabuf-rw stat [--json] PID[:RINGFD]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "source", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'z' },
		{ "offset", required_argument, NULL, 'o' },
		{ "buffered", no_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ }
	};
	struct source src = { .name = "udmabuf", .size = 1 << 20, .fd = -1 };
	size_t len = 65536;
	uint64_t off = 0;
	bool buffered = false;
	const char *cmd;
	int c, ret;

	if (argc < 2) {
		usage();
		return 2;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "js:z:o:bh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 's':
			src.name = optarg;
			break;
		case 'z':
			len = strtoull(optarg, NULL, 0);
			break;
		case 'o':
			off = strtoull(optarg, NULL, 0);
			break;
		case 'b':
			buffered = true;
			break;
		default:
			usage();
			return c == 'h' ? 0 : 2;
		}
	}
	if (optind != argc - 1) {
		usage();
		return 2;
	}
	if (!strcmp(cmd, "stat"))
		return do_stat(argv[optind]);
	if (strcmp(cmd, "check")) {
		usage();
		return 2;
	}
	if (!len || len > (64 << 20)) {
		fprintf(stderr, "dmabuf-rw check: --size from 1 byte to 64 MiB\n");
		return 2;
	}
	/* the buffer: the probe's size, whole pages */
	src.size = (len + sysconf(_SC_PAGESIZE) - 1) & ~(sysconf(_SC_PAGESIZE) - 1);
	ret = check(&src, argv[optind], off, len, buffered);
	print_report();
	return ret;
}
