/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the dmabuf-rw guest tests.
 */
#ifndef DMABUFRW_TEST_UTIL_H
#define DMABUFRW_TEST_UTIL_H

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/nvme_ioctl.h>
#include <liburing.h>

#include "dmabufrw.h"

/* The serial of the VM runner's NVMe controller (scripts/run-vm). */
#define NVME_SERIAL	"dmabufrw0"

/* Read a small sysfs or proc file into @buf; returns its length or -1. */
static inline int read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY), n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return n;
}

/*
 * The disk name of namespace @nsid of the NVMe controller (or, for a
 * multipath head, subsystem) with serial @serial, in @name; "" if there is
 * none.  Looked up every time: the driver probes controllers in parallel,
 * so their numbers vary from boot to boot; a controller that a test removed
 * and rescanned may come back under another number while the old one is
 * still referenced (the lowest number wins); and the namespaces of a
 * controller are named in the order their scans finish, not by NSID.
 */
static inline void nvme_serial_ns_name(const char *serial, unsigned int nsid,
				       char *name, size_t size)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	int best = -1, best_n = 0;

	while (d && (e = readdir(d))) {
		char path[300], buf[64], rest;
		int c, n;

		if (sscanf(e->d_name, "nvme%dn%d%c", &c, &n, &rest) != 2 ||
		    (best >= 0 && c >= best))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/nsid", e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 ||
		    strtoul(buf, NULL, 0) != nsid)
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/device/serial",
			 e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0 || strcmp(buf, serial))
			continue;
		best = c;
		best_n = n;
	}
	if (d)
		closedir(d);
	if (best < 0)
		snprintf(name, size, "%s", "");
	else
		snprintf(name, size, "nvme%dn%d", best, best_n);
}

/*
 * The disk name of namespace @nsid of the VM runner's controller; while it
 * has none (a test removed the controller), a name no disk has, so that
 * paths made of it do not exist.
 */
static inline void nvme_ns_name(unsigned int nsid, char *name, size_t size)
{
	nvme_serial_ns_name(NVME_SERIAL, nsid, name, size);
	if (!*name)
		snprintf(name, size, "nvme-absent-n%u", nsid);
}

/*
 * The name of the controller of NVMe disk @disk ("nvme1" for the disk
 * nvme0n1 of controller nvme1: with NVMe multipath, disk names number
 * subsystems, not controllers), in @ctrl; "" if it has none.
 */
static inline void nvme_disk_ctrl(const char *disk, char *ctrl, size_t size)
{
	char path[300], link[300], *base;
	ssize_t len;

	snprintf(path, sizeof(path), "/sys/block/%s/device", disk);
	len = readlink(path, link, sizeof(link) - 1);
	link[len > 0 ? len : 0] = 0;
	base = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	snprintf(ctrl, size, "%.*s", (int)size - 1, base);
}

/*
 * The generic character device of NVMe disk @disk in @path: "/dev/ngCnN"
 * for controller C's namespace disk nvmeXnN.
 */
static inline void nvme_disk_ng(const char *disk, char *path, size_t size)
{
	char ctrl[64];
	int x = 0, n = 1, c = 0;

	nvme_disk_ctrl(disk, ctrl, sizeof(ctrl));
	sscanf(disk, "nvme%dn%d", &x, &n);
	sscanf(ctrl, "nvme%d", &c);
	snprintf(path, size, "/dev/ng%dn%d", c, n);
}

/* The PCI name of the first device bound to @driver in @name, or -1. */
static inline int pci_bound_to(const char *driver, char *name, size_t size)
{
	char path[512], link[300];
	struct dirent *e;
	int ret = -1;
	DIR *d;

	d = opendir("/sys/bus/pci/devices");
	while (d && ret && (e = readdir(d))) {
		ssize_t n;

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver",
			 e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		if (!strcmp(strrchr(link, '/') ? strrchr(link, '/') + 1 : link, driver)) {
			snprintf(name, size, "%.*s", (int)size - 1, e->d_name);
			ret = 0;
		}
	}
	if (d)
		closedir(d);
	return ret;
}

/* The emulated NVMe namespace the VM runner attaches: NSID 1. */
static inline const char *nvme_name(void)
{
	static char name[32];

	nvme_ns_name(1, name, sizeof(name));
	return name;
}

/* A path of the namespace: "/dev/%s", "/sys/block/%s/device/..." */
static inline const char *nvme_path(const char *fmt)
{
	static char path[256];

	snprintf(path, sizeof(path), fmt, nvme_name());
	return path;
}

#define NVME_DEV	nvme_path("/dev/%s")

/*
 * The test VM's second namespace of the same controller, NSID 2: QEMU's
 * null driver with a fixed latency per command (NVME_SLOW_LATENCY_S),
 * reads return zeroes.  For tests that need I/O the device holds a while.
 */
#define NVME_SLOW_LATENCY_S	2.0
static inline const char *nvme_slow_path(const char *fmt)
{
	static char name[32], path[256];

	nvme_ns_name(2, name, sizeof(name));
	snprintf(path, sizeof(path), fmt, name);
	return path;
}

/*
 * A pattern that differs for every 8-byte word, every disk offset and every
 * seed, so a misplaced, stale or partial transfer is always detected.
 */
static inline uint64_t pattern_word(uint64_t seed, uint64_t pos)
{
	uint64_t x = seed ^ (pos * 0x9e3779b97f4a7c15ULL);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return x;
}

/* Fill @len bytes (multiple of 8) as they should sit at disk offset @pos. */
static inline void pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t pos)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = pattern_word(seed, pos + i * 8);
}

/* The first byte of [@p, @p + @len) that is not @byte, or -1. */
static inline long first_not(const void *p, size_t len, int byte)
{
	const unsigned char *c = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (c[i] != byte)
			return i;
	return -1;
}

/* Byte offset of the first mismatch, or -1 when @buf holds the pattern. */
static inline long pattern_check(const void *buf, size_t len, uint64_t seed, uint64_t pos)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pattern_word(seed, pos + i * 8))
			return (long)(i * 8);
	return -1;
}

/*
 * Write @len bytes of the pattern of @seed, as made for position @ppos, at
 * @off of @fd, from an aligned buffer (O_DIRECT files): 0 or -errno.
 */
static inline int pattern_fill_fd(int fd, uint64_t off, size_t len,
				  uint64_t seed, uint64_t ppos)
{
	void *buf;
	int ret = 0;

	if (posix_memalign(&buf, 4096, len))
		return -ENOMEM;
	pattern_fill(buf, len, seed, ppos);
	if (pwrite(fd, buf, len, off) != (ssize_t)len)
		ret = -EIO;
	free(buf);
	return ret;
}

/*
 * Check @len bytes at @off of @fd against that pattern: -1 if it holds,
 * else the offset of the first bad word; -2 if the read fails, -3 without
 * memory.
 */
static inline long pattern_check_fd(int fd, uint64_t off, size_t len,
				    uint64_t seed, uint64_t ppos)
{
	void *buf;
	long bad = -2;

	if (posix_memalign(&buf, 4096, len))
		return -3;
	if (pread(fd, buf, len, off) == (ssize_t)len)
		bad = pattern_check(buf, len, seed, ppos);
	free(buf);
	return bad;
}

/*
 * The device memory the VM runner attached (scripts/run-vm --devmem,
 * dmabufrw_devmem): skip without it; @p2p is set for the switch topology,
 * where peer-to-peer DMA moves data, and cleared for the root bus, where
 * it is refused.
 */
#define REQUIRE_DEVMEM(p2p) do {					\
	const char *__topo = getenv("dmabufrw_devmem");			\
									\
	if (!__topo)							\
		SKIP(return, "no device memory (scripts/run-vm --devmem root|switch)"); \
	ASSERT_TRUE(!strcmp(__topo, "switch") || !strcmp(__topo, "root")); \
	(p2p) = !strcmp(__topo, "switch");				\
} while (0)

/*
 * A system call that must fail with errno @err: a call that succeeds fails
 * both checks, and errno is only read after a failure.
 */
#define EXPECT_ERRNO(err, call) do {					\
	long __ret;							\
									\
	errno = 0;							\
	__ret = (long)(call);						\
	EXPECT_EQ(-1L, __ret);						\
	EXPECT_EQ((err), __ret == -1 ? errno : 0);			\
} while (0)

static inline double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Write @text to a sysfs, proc or cgroup file; returns 0 or -errno. */
static inline int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * The dma-buf with inode number @ino in debugfs's dma_buf/bufinfo: the
 * reference count of its file (descriptors and kernel references, such as
 * a registration's) and its number of attachments.  Returns 0, -ENOENT
 * when there is no such buffer (any more), -EPROTO when its entry ends
 * without the count of attachments, or the -errno of a failed open or
 * read (the file's locks are interruptible).
 */
static inline int bufinfo(unsigned long ino, long *refs, int *attached)
{
	FILE *f = fopen("/sys/kernel/debug/dma_buf/bufinfo", "r");
	char line[512];
	int found = -1, err;

	*refs = -1;
	*attached = -1;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long size, flags, mode, i;
		long count;
		char exp[64];

		if (found < 0) {
			if (sscanf(line, "%lu %lx %lx %ld %63s %lu", &size, &flags,
				   &mode, &count, exp, &i) == 6 && i == ino) {
				*refs = count;
				found = 0;
			}
		} else if (sscanf(line, "Total %d devices attached", attached) == 1) {
			found = 1;
			break;
		}
	}
	err = ferror(f) ? -errno : found == 0 ? -EPROTO : -ENOENT;
	fclose(f);
	return found == 1 ? 0 : err;
}

/*
 * Does the kernel register dma-bufs in io_uring buffer tables (the
 * dmabuf-rw series, IORING_FEAT_REGBUF_DMABUF)?
 */
static inline int kernel_has_dmabuf_io(void)
{
	struct io_uring ring;
	int ret;

	if (io_uring_queue_init(1, &ring, 0))
		return 0;
	ret = dmabufrw_supported(&ring);
	io_uring_queue_exit(&ring);
	return ret;
}

/*
 * Skip the test, saying why, where the kernel or the machine lacks what it
 * needs; make test fails on a skip, since the rig's kernels have it all.
 */
#define REQUIRE_DMABUF_IO() do {					\
	if (!kernel_has_dmabuf_io())					\
		SKIP(return, "the kernel cannot register dma-bufs "	\
		     "(no IORING_FEAT_REGBUF_DMABUF)");			\
	if (access(NVME_DEV, F_OK))					\
		SKIP(return, "no NVMe namespace %s", NVME_DEV);		\
} while (0)

/*
 * Polled I/O: the namespace's queue polls (the NVMe driver has poll queues,
 * which the VM runner asks for with nvme.poll_queues).
 */
static inline int nvme_polls(void)
{
	FILE *f = fopen(nvme_path("/sys/block/%s/queue/io_poll"), "r");
	int on = 0;

	if (f) {
		if (fscanf(f, "%d", &on) != 1)
			on = 0;
		fclose(f);
	}
	return on;
}

#define REQUIRE_POLL_QUEUES() do {					\
	if (!nvme_polls())						\
		SKIP(return, "%s has no poll queues (nvme.poll_queues=0)", \
		     NVME_DEV);						\
} while (0)

/*
 * Interrupts the I/O queues of the namespace's controller have raised, from
 * /proc/interrupts ("nvme0q1", "nvme0q2"... the admin queue is q0; poll
 * queues have none), or -1.
 */
static inline long long nvme_io_interrupts(void)
{
	char ctrl[32], line[1024];
	long long sum = 0;
	FILE *f = fopen("/proc/interrupts", "r");

	if (!f)
		return -1;
	nvme_disk_ctrl(nvme_name(), ctrl, sizeof(ctrl) - 1);
	strcat(ctrl, "q");
	while (fgets(line, sizeof(line), f)) {
		char *name = strrchr(line, ' '), *p = strchr(line, ':');
		long long n;
		int off;

		if (!name || !p)
			continue;
		name++;
		name[strcspn(name, "\n")] = 0;
		if (strncmp(name, ctrl, strlen(ctrl)) ||
		    atoi(name + strlen(ctrl)) < 1)
			continue;
		for (p++; sscanf(p, "%lld%n", &n, &off) == 1; p += off)
			sum += n;
	}
	fclose(f);
	return sum;
}

/* Inode number of an open file, 0 on error. */
static inline unsigned long file_ino(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : st.st_ino;
}

/*
 * Wait up to 10 s for the dma-buf @ino to have @attached attachments and a
 * file reference count of @refs.  A registration lets go asynchronously,
 * and its last fput, made from a kernel worker, is deferred again after the
 * detach: both have to be waited for.  Returns 0 or -1.
 */
static inline int wait_bufinfo(unsigned long ino, int attached, long refs)
{
	for (int i = 0; i < 200; i++) {
		long r;
		int n;

		if (!bufinfo(ino, &r, &n) && n == attached && r == refs)
			return 0;
		usleep(50000);
	}
	return -1;
}

/* A fixed-buffer transfer: offset in the registered buffer and in the file. */
struct fixed_io {
	uint64_t buf_off;
	uint64_t off;
	unsigned int len;
};

/*
 * A vectored transfer of struct fixed_io: its buffer range in VEC_PIECES
 * equal pieces, handed to READV_FIXED/WRITEV_FIXED rotated by one (the
 * file's piece j is the buffer's piece j + 1, its last piece the buffer's
 * first).  The kernel merges the pieces that continue one another, so the
 * I/O reaches the device as two ranges of the dma-buf out of order.  The
 * length must be a multiple of VEC_PIECES times the device's block size.
 */
#define VEC_PIECES	4

static inline uint64_t vec_piece_buf_off(const struct fixed_io *x,
					 unsigned int j)
{
	return x->buf_off + (uint64_t)((j + 1) % VEC_PIECES) *
		(x->len / VEC_PIECES);
}

static inline void vec_iovecs(const struct fixed_io *x, struct iovec *iov)
{
	for (unsigned int j = 0; j < VEC_PIECES; j++)
		dmabufrw_dmabuf_iovec(&iov[j], vec_piece_buf_off(x, j),
				      x->len / VEC_PIECES);
}

/* Fill @map (the slot's CPU view) with what @x writes at x->off. */
static inline void vec_pattern_fill(void *map, const struct fixed_io *x,
				    uint64_t seed)
{
	unsigned int p = x->len / VEC_PIECES;

	for (unsigned int j = 0; j < VEC_PIECES; j++)
		pattern_fill((char *)map + vec_piece_buf_off(x, j), p, seed,
			     x->off + (uint64_t)j * p);
}

/* Did @x read the pattern at x->off into @map?  -1 if so. */
static inline long vec_pattern_check(const void *map,
				     const struct fixed_io *x, uint64_t seed)
{
	unsigned int p = x->len / VEC_PIECES;

	for (unsigned int j = 0; j < VEC_PIECES; j++) {
		long bad = pattern_check((const char *)map +
					 vec_piece_buf_off(x, j), p, seed,
					 x->off + (uint64_t)j * p);

		if (bad >= 0)
			return bad;
	}
	return -1;
}

/*
 * Queue @n READ_FIXED (or WRITE_FIXED if @write) of registered buffer @idx
 * on @fd (an index into the ring's files with IOSQE_FIXED_FILE in
 * @sqe_flags), at most @qd in flight, and reap them: 0 if each moved its
 * whole length, else the first bad result (-EIO for a short one).  With
 * @vectored, each transfer is a READV_FIXED/WRITEV_FIXED of the rotated
 * pieces of vec_iovecs().
 */
static inline int fixed_io_batch_how(struct io_uring *ring, int write,
				     int fd, unsigned int sqe_flags,
				     unsigned int idx,
				     const struct fixed_io *x,
				     unsigned int n, unsigned int qd,
				     int vectored)
{
	static struct iovec iov[256][VEC_PIECES];

	unsigned int sub = 0, done = 0, inflight = 0;
	struct io_uring_cqe *cqe;
	int err = 0;

	while (done < n) {
		while (sub < n && inflight < qd) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

			if (!sqe)
				break;
			if (vectored) {
				vec_iovecs(&x[sub], iov[sub]);
				if (write)
					dmabufrw_prep_writev_dmabuf(sqe, fd, idx,
						iov[sub], VEC_PIECES, x[sub].off);
				else
					dmabufrw_prep_readv_dmabuf(sqe, fd, idx,
						iov[sub], VEC_PIECES, x[sub].off);
			} else if (write) {
				dmabufrw_prep_write_dmabuf(sqe, fd, idx,
					x[sub].buf_off, x[sub].len, x[sub].off);
			} else {
				dmabufrw_prep_read_dmabuf(sqe, fd, idx,
					x[sub].buf_off, x[sub].len, x[sub].off);
			}
			sqe->flags |= sqe_flags;
			sqe->user_data = sub++;
			inflight++;
		}
		if (io_uring_submit_and_wait(ring, 1) < 0)
			return -EIO;
		while (io_uring_peek_cqe(ring, &cqe) == 0) {
			if (cqe->res != (int)x[cqe->user_data].len && !err)
				err = cqe->res < 0 ? cqe->res : -EIO;
			io_uring_cqe_seen(ring, cqe);
			inflight--;
			done++;
		}
	}
	return err;
}

static inline int fixed_io_batch_flags(struct io_uring *ring, int write,
				       int fd, unsigned int sqe_flags,
				       unsigned int idx,
				       const struct fixed_io *x,
				       unsigned int n, unsigned int qd)
{
	return fixed_io_batch_how(ring, write, fd, sqe_flags, idx, x, n, qd, 0);
}

/* fixed_io_batch() with READV_FIXED/WRITEV_FIXED (vec_iovecs()) */
static inline int vec_io_batch(struct io_uring *ring, int write, int fd,
			       unsigned int idx, const struct fixed_io *x,
			       unsigned int n, unsigned int qd)
{
	return n > 256 ? -EINVAL :
	       fixed_io_batch_how(ring, write, fd, 0, idx, x, n, qd, 1);
}

static inline int fixed_io_batch(struct io_uring *ring, int write, int fd,
				 unsigned int idx, const struct fixed_io *x,
				 unsigned int n, unsigned int qd)
{
	return fixed_io_batch_flags(ring, write, fd, 0, idx, x, n, qd);
}

/*
 * The namespace's generic character device ("/dev/ng0n1" for nvme0n1 of
 * controller nvme0), which takes NVMe passthrough commands.
 */
static inline const char *nvme_ng_dev(void)
{
	static char path[64];

	nvme_disk_ng(nvme_name(), path, sizeof(path));
	return path;
}

/*
 * Open the namespace's generic device with @flags; its NSID and the log2
 * of its logical block size (asked of the block device @bdev) in *@nsid
 * and *@lba_shift.  The descriptor, or -errno.
 */
static inline int nvme_ng_open(int flags, int bdev, unsigned int *nsid,
			       unsigned int *lba_shift)
{
	int fd = open(nvme_ng_dev(), flags), id, lbs, err;

	if (fd < 0)
		return -errno;
	id = ioctl(fd, NVME_IOCTL_ID);
	if (id <= 0 || ioctl(bdev, BLKSSZGET, &lbs)) {
		err = id == 0 ? -ENODEV : -errno;
		close(fd);
		return err;
	}
	*nsid = id;
	*lba_shift = __builtin_ctz(lbs);
	return fd;
}

/*
 * Queue @n NVMe passthrough Reads (or Writes if @write) through the
 * generic device @fd between dma-buf slot @idx and namespace @nsid (blocks
 * of 1 << @lba_shift bytes; x->off is a byte offset), at most @qd in
 * flight, and reap them all: 0 if each completed with status 0, else the
 * first bad result.
 */
static inline int nvme_io_batch(struct io_uring *ring, int write, int fd,
				unsigned int nsid, unsigned int lba_shift,
				unsigned int idx, const struct fixed_io *x,
				unsigned int n, unsigned int qd)
{
	unsigned int sub = 0, done = 0, inflight = 0;
	struct io_uring_cqe *cqe;
	int err = 0;

	while (done < n) {
		while (!err && sub < n && inflight < qd) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

			if (!sqe)
				break;
			if (write)
				dmabufrw_prep_nvme_write_dmabuf(sqe, fd, nsid,
					idx, x[sub].buf_off, x[sub].len,
					x[sub].off >> lba_shift, lba_shift);
			else
				dmabufrw_prep_nvme_read_dmabuf(sqe, fd, nsid,
					idx, x[sub].buf_off, x[sub].len,
					x[sub].off >> lba_shift, lba_shift);
			sqe->user_data = sub++;
			inflight++;
		}
		if (!inflight)
			break;
		/* on an error, stop submitting, but reap what is in flight */
		if (io_uring_submit_and_wait(ring, 1) < 0 && !err)
			err = -EIO;
		while (io_uring_peek_cqe(ring, &cqe) == 0) {
			if (cqe->res && !err)
				err = cqe->res;
			io_uring_cqe_seen(ring, cqe);
			inflight--;
			done++;
		}
	}
	return err;
}

/*
 * The test VM's file systems (scripts/mk-fs-images): ext4 on partition 1
 * of namespace 3, XFS on the whole of namespace 4.  Tests mount them for
 * their own run and unmount them at its end.
 */
#define EXT4_MNT	"/mnt/ext4"
#define XFS_MNT		"/mnt/xfs"

/* Mount @nsid's namespace (partition @part, or the whole of it if 0). */
static inline int mount_ns(unsigned int nsid, int part, const char *type,
			   const char *dir, const char *opts)
{
	char name[64], dev[96];

	nvme_ns_name(nsid, name, sizeof(name));
	if (part)
		snprintf(dev, sizeof(dev), "/dev/%sp%d", name, part);
	else
		snprintf(dev, sizeof(dev), "/dev/%s", name);
	mkdir("/mnt", 0755);
	mkdir(dir, 0755);
	if (mount(dev, dir, type, 0, opts))
		return -errno;
	return 0;
}

/*
 * Unmount @dir, waiting while it is busy: the ring's registrations hold
 * their target files until the ring's exit work and the registrations'
 * release work have run, after io_uring_queue_exit() returned.
 */
static inline int umount_busy(const char *dir)
{
	for (int i = 0; i < 200; i++) {
		if (!umount(dir))
			return 0;
		if (errno != EBUSY)
			return -errno;
		usleep(50 * 1000);
	}
	/*
	 * Still busy: a failed test left a file open.  Detach the mount so
	 * that the next test can mount the device again, and fail this one.
	 */
	umount2(dir, MNT_DETACH);
	return -EBUSY;
}

#endif
