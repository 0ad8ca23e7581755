// SPDX-License-Identifier: MIT
/*
 * libdmabufrw: exporter helpers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/nvme_ioctl.h>
#include <linux/udmabuf.h>

#include <liburing.h>
#include <sys/syscall.h>

#include "dmabufrw.h"

/*
 * The uAPI of the dmabuf-rw series, for headers that predate it.  These
 * mirror include/uapi/linux/io_uring.h of the series.
 */
#define DMABUFRW_RSRC_UPDATE_DESC	(1U << 0)
#define DMABUFRW_RSRC_REGISTER_DESC	(1U << 1)

struct dmabufrw_rsrc_register {
	uint32_t nr;
	uint32_t flags;
	uint64_t resv2;
	uint64_t data;
	uint64_t tags;
};

struct dmabufrw_rsrc_update2 {
	uint32_t offset;
	uint32_t flags;
	uint64_t data;
	uint64_t tags;
	uint32_t nr;
	uint32_t resv2;
};

/* Newer than Debian 12's kernel headers */
#ifndef IORING_REGISTER_USE_REGISTERED_RING
#define IORING_REGISTER_USE_REGISTERED_RING	(1U << 31)
#endif
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING		(1U << 13)
#endif
#define DMABUFRW_FEAT_REGBUF_DMABUF		(1U << 18)
/* liburing's struct io_uring.int_flags: the ring fd is registered */
#define DMABUFRW_INT_FLAG_REG_RING		1

/*
 * io_uring_register() on the ring the way liburing's own registration calls
 * do it: through the registered ring descriptor when the ring has one and
 * the kernel takes it for registration, which keeps working once the ring
 * fd itself is closed; else through the ring fd.
 */
static int ring_register(struct io_uring *ring, unsigned int op,
			 const void *arg, unsigned int nr)
{
	int fd = ring->ring_fd, ret;

	if ((ring->int_flags & DMABUFRW_INT_FLAG_REG_RING) &&
	    (ring->features & IORING_FEAT_REG_REG_RING)) {
		op |= IORING_REGISTER_USE_REGISTERED_RING;
		fd = ring->enter_ring_fd;
	}
	ret = syscall(__NR_io_uring_register, fd, op, arg, nr);
	return ret < 0 ? -errno : ret;
}

int dmabufrw_supported(const struct io_uring *ring)
{
	return !!(ring->features & DMABUFRW_FEAT_REGBUF_DMABUF);
}

/* IORING_REGISTER_BUFFERS_UPDATE of one slot with @data, an iovec or a descriptor. */
static int update_slot(struct io_uring *ring, unsigned int index,
		       uint32_t flags, const void *data)
{
	struct dmabufrw_rsrc_update2 up = {
		.offset = index,
		.flags = flags,
		.data = (uint64_t)(uintptr_t)data,
		.nr = 1,
	};
	int ret;

	ret = ring_register(ring, IORING_REGISTER_BUFFERS_UPDATE, &up,
			    sizeof(up));
	if (ret < 0)
		return ret;
	/* one slot asked for: the kernel updates it or says why not */
	return ret == 1 ? 0 : -EINVAL;
}

int dmabufrw_register_dmabuf_range(struct io_uring *ring, unsigned int index,
				   int dmabuf_fd, int target, uint64_t offset,
				   uint64_t len, unsigned int flags)
{
	struct dmabufrw_regbuf_desc desc = {
		.type = DMABUFRW_REGBUF_DMABUF,
		.flags = flags,
		.addr = offset,
		.len = len,
		.dmabuf_fd = dmabuf_fd,
		.target_fd = target,
	};

	return update_slot(ring, index, DMABUFRW_RSRC_UPDATE_DESC, &desc);
}

int dmabufrw_register_dmabuf(struct io_uring *ring, unsigned int index,
			     int dmabuf_fd, int target_fd)
{
	return dmabufrw_register_dmabuf_range(ring, index, dmabuf_fd,
					      target_fd, 0, 0, 0);
}

void dmabufrw_prep_read_dmabuf(struct io_uring_sqe *sqe, int fd,
			       unsigned int buf_index, uint64_t buf_off,
			       unsigned int len, uint64_t file_off)
{
	io_uring_prep_read_fixed(sqe, fd, NULL, len, file_off, buf_index);
	sqe->addr = buf_off;
}

void dmabufrw_prep_write_dmabuf(struct io_uring_sqe *sqe, int fd,
				unsigned int buf_index, uint64_t buf_off,
				unsigned int len, uint64_t file_off)
{
	io_uring_prep_write_fixed(sqe, fd, NULL, len, file_off, buf_index);
	sqe->addr = buf_off;
}

/* Linux 6.15 opcodes, newer than Debian 12's liburing headers */
#define DMABUFRW_OP_READV_FIXED		60
#define DMABUFRW_OP_WRITEV_FIXED	61

void dmabufrw_prep_readv_dmabuf(struct io_uring_sqe *sqe, int fd,
				unsigned int buf_index,
				const struct iovec *iovecs,
				unsigned int nr_vecs, uint64_t file_off)
{
	io_uring_prep_rw(DMABUFRW_OP_READV_FIXED, sqe, fd, iovecs, nr_vecs,
			 file_off);
	sqe->buf_index = buf_index;
}

void dmabufrw_prep_writev_dmabuf(struct io_uring_sqe *sqe, int fd,
				 unsigned int buf_index,
				 const struct iovec *iovecs,
				 unsigned int nr_vecs, uint64_t file_off)
{
	io_uring_prep_rw(DMABUFRW_OP_WRITEV_FIXED, sqe, fd, iovecs, nr_vecs,
			 file_off);
	sqe->buf_index = buf_index;
}

/* NVM command set opcodes */
#define DMABUFRW_NVME_CMD_WRITE		0x01
#define DMABUFRW_NVME_CMD_READ		0x02

static void prep_nvme_dmabuf(struct io_uring_sqe *sqe, int fd,
			     uint8_t opcode, unsigned int nsid,
			     unsigned int buf_index, uint64_t buf_off,
			     unsigned int len, uint64_t slba,
			     unsigned int lba_shift)
{
	struct nvme_uring_cmd *cmd = (struct nvme_uring_cmd *)sqe->cmd;

	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fd;
	sqe->cmd_op = NVME_URING_CMD_IO;
	sqe->uring_cmd_flags = IORING_URING_CMD_FIXED;
	sqe->buf_index = buf_index;
	cmd->opcode = opcode;
	cmd->nsid = nsid;
	cmd->addr = buf_off;
	cmd->data_len = len;
	cmd->cdw10 = (uint32_t)slba;
	cmd->cdw11 = (uint32_t)(slba >> 32);
	cmd->cdw12 = (len >> lba_shift) - 1;	/* 0's based block count */
}

void dmabufrw_prep_nvme_read_dmabuf(struct io_uring_sqe *sqe, int fd,
				    unsigned int nsid, unsigned int buf_index,
				    uint64_t buf_off, unsigned int len,
				    uint64_t slba, unsigned int lba_shift)
{
	prep_nvme_dmabuf(sqe, fd, DMABUFRW_NVME_CMD_READ, nsid, buf_index,
			 buf_off, len, slba, lba_shift);
}

void dmabufrw_prep_nvme_write_dmabuf(struct io_uring_sqe *sqe, int fd,
				     unsigned int nsid, unsigned int buf_index,
				     uint64_t buf_off, unsigned int len,
				     uint64_t slba, unsigned int lba_shift)
{
	prep_nvme_dmabuf(sqe, fd, DMABUFRW_NVME_CMD_WRITE, nsid, buf_index,
			 buf_off, len, slba, lba_shift);
}

int dmabufrw_dmabuf_iovec(struct iovec *iov, uint64_t buf_off, size_t len)
{
	if (buf_off != (uintptr_t)buf_off)
		return -EOVERFLOW;
	iov->iov_base = (void *)(uintptr_t)buf_off;
	iov->iov_len = len;
	return 0;
}

int dmabufrw_register_buffers_desc(struct io_uring *ring,
				   const struct dmabufrw_regbuf_desc *descs,
				   unsigned int nr)
{
	struct dmabufrw_rsrc_register rr = {
		.nr = nr,
		.flags = DMABUFRW_RSRC_REGISTER_DESC,
		.data = (uint64_t)(uintptr_t)descs,
	};
	int ret;

	ret = ring_register(ring, IORING_REGISTER_BUFFERS2, &rr, sizeof(rr));
	return ret < 0 ? ret : 0;
}

int dmabufrw_update_buffers_desc(struct io_uring *ring, unsigned int off,
				 const struct dmabufrw_regbuf_desc *descs,
				 const uint64_t *tags, unsigned int nr)
{
	struct dmabufrw_rsrc_update2 up = {
		.offset = off,
		.flags = DMABUFRW_RSRC_UPDATE_DESC,
		.data = (uint64_t)(uintptr_t)descs,
		.tags = (uint64_t)(uintptr_t)tags,
		.nr = nr,
	};

	return ring_register(ring, IORING_REGISTER_BUFFERS_UPDATE, &up,
			     sizeof(up));
}

int dmabufrw_rw_fixed(struct io_uring *ring, int write, int fd,
		      unsigned int idx, uint64_t addr, unsigned int len,
		      uint64_t off)
{
	/* tags this request's CQE apart from anyone else's */
	static const uint64_t tag = 0x646d616272770000ULL;	/* "dmabrw" */
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;
	int ret;

	if (!sqe)
		return -EBUSY;
	if (write)
		dmabufrw_prep_write_dmabuf(sqe, fd, idx, addr, len, off);
	else
		dmabufrw_prep_read_dmabuf(sqe, fd, idx, addr, len, off);
	sqe->user_data = tag;
	ret = io_uring_submit(ring);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(ring, &cqe);
	if (ret < 0)
		return ret;
	if (cqe->user_data != tag)
		return -EBUSY;
	ret = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return ret;
}

int dmabufrw_unregister_slot(struct io_uring *ring, unsigned int index)
{
	/* a { NULL, 0 } iovec empties a slot on every kernel */
	struct iovec iov = { NULL, 0 };

	return update_slot(ring, index, 0, &iov);
}

int dmabufrw_alloc_udmabuf(size_t size, int *memfd_out)
{
	struct udmabuf_create create = { 0 };
	int memfd, devfd, fd, err;

	memfd = memfd_create("dmabufrw", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (memfd < 0)
		return -errno;
	if (ftruncate(memfd, size) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
		err = -errno;
		goto out_memfd;
	}
	devfd = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	if (devfd < 0) {
		err = -errno;
		goto out_memfd;
	}
	create.memfd = memfd;
	create.flags = UDMABUF_FLAGS_CLOEXEC;
	create.offset = 0;
	create.size = size;
	fd = ioctl(devfd, UDMABUF_CREATE, &create);
	err = fd < 0 ? -errno : fd;
	close(devfd);
	if (fd < 0)
		goto out_memfd;
	if (memfd_out)
		*memfd_out = memfd;
	else
		close(memfd);
	return fd;

out_memfd:
	close(memfd);
	return err;
}

int dmabufrw_alloc_heap(const char *heap, size_t size)
{
	struct dma_heap_allocation_data data = {
		.len = size,
		.fd_flags = O_RDWR | O_CLOEXEC,
	};
	char path[128];
	int heapfd, ret;

	snprintf(path, sizeof(path), "/dev/dma_heap/%s", heap ? heap : "system");
	heapfd = open(path, O_RDONLY | O_CLOEXEC);
	if (heapfd < 0)
		return -errno;
	ret = ioctl(heapfd, DMA_HEAP_IOCTL_ALLOC, &data);
	ret = ret < 0 ? -errno : (int)data.fd;
	close(heapfd);
	return ret;
}

int64_t dmabufrw_size(int dmabuf_fd)
{
	off_t end = lseek(dmabuf_fd, 0, SEEK_END);

	if (end < 0)
		return -errno;
	lseek(dmabuf_fd, 0, SEEK_SET);
	return end;
}

static int cpu_sync(int fd, uint64_t flags)
{
	struct dma_buf_sync sync = { .flags = flags };

	while (ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) < 0) {
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
	return 0;
}

int dmabufrw_cpu_begin(int dmabuf_fd, uint64_t flags)
{
	return cpu_sync(dmabuf_fd, DMA_BUF_SYNC_START | flags);
}

int dmabufrw_cpu_end(int dmabuf_fd, uint64_t flags)
{
	return cpu_sync(dmabuf_fd, DMA_BUF_SYNC_END | flags);
}

int dmabufrw_set_name(int dmabuf_fd, const char *name)
{
	return ioctl(dmabuf_fd, DMA_BUF_SET_NAME_B, name) < 0 ? -errno : 0;
}

int dmabufrw_slot_fdinfo(int pid, int ring_fd, unsigned int index,
			 char *line, size_t size)
{
	char path[64], want[16], *buf = NULL;
	bool in_bufs = false;
	int ret = -ENOENT;
	size_t cap = 0;
	ssize_t len;
	int wlen;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, ring_fd);
	else
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ring_fd);
	wlen = snprintf(want, sizeof(want), "%5u: ", index);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	/* the slot lines follow "UserBufs:"; a target's path may be long */
	while ((len = getline(&buf, &cap, f)) > 0) {
		if (!in_bufs) {
			in_bufs = !strncmp(buf, "UserBufs:", 9);
			continue;
		}
		if (strncmp(buf, want, wlen))
			continue;
		if (buf[len - 1] == '\n')
			buf[--len] = 0;
		if ((size_t)(len - wlen) >= size) {
			ret = -ENOSPC;
		} else {
			memcpy(line, buf + wlen, len - wlen + 1);
			ret = 0;
		}
		break;
	}
	free(buf);
	fclose(f);
	return ret;
}

int dmabufrw_fdinfo_value(const char *line, const char *key, char *val,
			  size_t size)
{
	size_t klen = strlen(key), vlen;
	const char *p = line;

	if (size)
		val[0] = 0;
	while ((p = strstr(p, key))) {
		if ((p == line || p[-1] == ' ') && p[klen] == '=') {
			/* values have no spaces: the kernel escapes a path's */
			p += klen + 1;
			vlen = strcspn(p, " ");
			if (vlen >= size)
				return -ENOSPC;	/* @val stays empty */
			memcpy(val, p, vlen);
			val[vlen] = 0;
			return 0;
		}
		p += klen;
	}
	return -ENOENT;
}
