/* SPDX-License-Identifier: MIT */
/*
 * libdmabufrw: helpers for dma-buf backed io_uring I/O.
 *
 * Exporter helpers allocate dma-bufs from the in-kernel exporters that every
 * test machine has (udmabuf, the system dma-heap).  All functions return a
 * non-negative value on success and -errno on failure, like liburing.
 */
#ifndef DMABUFRW_H
#define DMABUFRW_H

#include <stddef.h>
#include <stdint.h>

/*
 * Allocate a dma-buf of @size bytes (a multiple of the page size) backed by a
 * sealed memfd through /dev/udmabuf.  If @memfd is not NULL it receives the
 * memfd (the CPU view of the same pages); otherwise the memfd is closed.
 * Returns the dma-buf fd.
 */
int dmabufrw_alloc_udmabuf(size_t size, int *memfd);

/*
 * Allocate a dma-buf of @size bytes from the dma-heap @heap ("system" when
 * NULL).  Returns the dma-buf fd.
 */
int dmabufrw_alloc_heap(const char *heap, size_t size);

/* Size of a dma-buf, from lseek(SEEK_END). */
int64_t dmabufrw_size(int dmabuf_fd);

/*
 * Bracket CPU access to a mapped dma-buf (DMA_BUF_IOCTL_SYNC).  @write says
 * whether the CPU writes; @read whether it reads.
 */
int dmabufrw_cpu_begin(int dmabuf_fd, int read, int write);
int dmabufrw_cpu_end(int dmabuf_fd, int read, int write);

/* Name a dma-buf (DMA_BUF_SET_NAME); shows in debugfs and the BPF iterator. */
int dmabufrw_set_name(int dmabuf_fd, const char *name);

/*
 * io_uring registration of a dma-buf (needs the dmabuf-rw series).
 *
 * The ring's buffer table must have a free slot @index (for example from
 * io_uring_register_buffers_sparse()).  READ_FIXED and WRITE_FIXED with
 * buf_index @index on @target_fd (a block device opened O_DIRECT) then move
 * data between the device and the dma-buf, with sqe->addr the offset in the
 * dma-buf.  Returns 0 or -errno.
 */
struct io_uring;
int io_uring_register_dmabuf(struct io_uring *ring, unsigned int index,
			     int dmabuf_fd, int target_fd);

/*
 * Descriptor of a registered buffer, as struct io_uring_regbuf_desc of the
 * series' uAPI, for headers that predate it.
 */
enum {
	DMABUFRW_REGBUF_EMPTY,
	DMABUFRW_REGBUF_USER,
	DMABUFRW_REGBUF_DMABUF,
};

struct dmabufrw_regbuf_desc {
	uint32_t type;
	uint32_t flags;
	uint64_t addr;
	uint64_t len;
	int32_t dmabuf_fd;
	int32_t target_fd;
	uint64_t resv[2];
};

/*
 * Register the ring's buffer table from @nr descriptors
 * (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_DESC).  Returns 0 or
 * -errno.
 */
int dmabufrw_register_buffers_desc(struct io_uring *ring,
				   const struct dmabufrw_regbuf_desc *descs,
				   unsigned int nr);

/*
 * Submit one READ_FIXED (@write false) or WRITE_FIXED of @len bytes between
 * @addr of registered buffer @idx (an offset for a dma-buf) and offset @off
 * of @fd, and wait for it.  Returns the CQE's result.
 */
int dmabufrw_rw_fixed(struct io_uring *ring, int write, int fd,
		      unsigned int idx, uint64_t addr, unsigned int len,
		      uint64_t off);

/* Empty slot @index of the ring's buffer table. */
int io_uring_unregister_buffer_slot(struct io_uring *ring, unsigned int index);

#endif
