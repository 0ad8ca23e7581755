/* SPDX-License-Identifier: MIT */
/*
 * libdmabufrw: helpers for dma-buf backed io_uring I/O.
 *
 * Exporter helpers allocate dma-bufs from the in-kernel exporters that every
 * test machine has (udmabuf, the system dma-heap).  The io_uring helpers
 * register a dma-buf in a liburing ring's buffer table with the dmabuf-rw
 * series' uAPI (Documentation/userspace-api/dma-buf-io.rst of the patched
 * kernel), through the ring's registered descriptor when it has one, as
 * liburing's own registration calls do.  All functions return a
 * non-negative value on success and -errno on failure, like liburing.
 * Each function has a man page in tools/lib/man/.
 */
#ifndef DMABUFRW_H
#define DMABUFRW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct io_uring;
struct io_uring_sqe;

/*
 * Does the ring's kernel register dma-bufs (IORING_FEAT_REGBUF_DMABUF)?
 * Returns 1 or 0: a kernel without the series, or built without the dma-buf
 * framework, says 0, whatever a registration attempt would fail with.
 */
int dmabufrw_supported(const struct io_uring *ring);

/*
 * Register the dma-buf @dmabuf_fd in slot @index of the ring's buffer table
 * (IORING_REGISTER_BUFFERS_UPDATE with a descriptor) for I/O on @target_fd,
 * a block device or a file of ext4 or XFS opened O_DIRECT, or a directory of
 * such a file system.  The table must exist and @index be within
 * it (for example from io_uring_register_buffers_sparse()); a buffer the
 * slot held is replaced.  READ_FIXED and WRITE_FIXED with buf_index @index
 * on @target_fd then move data between the device and the dma-buf, with
 * sqe->addr the offset in the dma-buf.  Returns 0.
 */
int dmabufrw_register_dmabuf(struct io_uring *ring, unsigned int index,
			     int dmabuf_fd, int target_fd);

/* Flag of dmabufrw_register_dmabuf_range(): IORING_REGBUF_F_FIXED_TARGET */
#define DMABUFRW_REGBUF_F_FIXED_TARGET	(1U << 0)

/*
 * Like dmabufrw_register_dmabuf(), for the @len bytes of the dma-buf from
 * offset @offset (all of it when both are 0): sqe->addr of I/O through slot
 * @index is then an offset in that range.  With
 * DMABUFRW_REGBUF_F_FIXED_TARGET in @flags, @target is an index into the
 * ring's registered files instead of a file descriptor.  Returns 0.
 */
int dmabufrw_register_dmabuf_range(struct io_uring *ring, unsigned int index,
				   int dmabuf_fd, int target, uint64_t offset,
				   uint64_t len, unsigned int flags);

/*
 * Prepare @sqe as a READ_FIXED (the device writes the dma-buf) or a
 * WRITE_FIXED of @len bytes between offset @buf_off of the dma-buf slot
 * @buf_index and offset @file_off of @fd: the offset goes to sqe->addr as
 * the 64-bit number it is, with no pointer cast on the caller's side.
 */
void dmabufrw_prep_read_dmabuf(struct io_uring_sqe *sqe, int fd,
			       unsigned int buf_index, uint64_t buf_off,
			       unsigned int len, uint64_t file_off);
void dmabufrw_prep_write_dmabuf(struct io_uring_sqe *sqe, int fd,
				unsigned int buf_index, uint64_t buf_off,
				unsigned int len, uint64_t file_off);

/*
 * Prepare @sqe as a READV_FIXED (the device writes the dma-buf) or a
 * WRITEV_FIXED between the @nr_vecs ranges @iovecs of the dma-buf slot
 * @buf_index and offset @file_off of @fd: one I/O, the ranges in order.
 * Each iovec is an offset in the slot and a length, as
 * dmabufrw_dmabuf_iovec() sets it.  @iovecs must stay valid until the
 * submission.
 */
void dmabufrw_prep_readv_dmabuf(struct io_uring_sqe *sqe, int fd,
				unsigned int buf_index,
				const struct iovec *iovecs,
				unsigned int nr_vecs, uint64_t file_off);
void dmabufrw_prep_writev_dmabuf(struct io_uring_sqe *sqe, int fd,
				 unsigned int buf_index,
				 const struct iovec *iovecs,
				 unsigned int nr_vecs, uint64_t file_off);

/*
 * Set @iov to the range of @len bytes at offset @buf_off of a dma-buf slot,
 * for dmabufrw_prep_readv_dmabuf() and dmabufrw_prep_writev_dmabuf(): the
 * offset goes to iov_base with no pointer cast on the caller's side.
 * Returns 0, or -EOVERFLOW if @buf_off does not fit in a pointer (a 32-bit
 * program cannot address 4 GiB or more of a slot with vectored I/O).
 */
int dmabufrw_dmabuf_iovec(struct iovec *iov, uint64_t buf_off, size_t len);

/*
 * Prepare @sqe, the first half of a 128-byte SQE (a ring set up with
 * IORING_SETUP_SQE128 and IORING_SETUP_CQE32, as NVMe passthrough needs), as an NVMe passthrough Read (the controller writes
 * the dma-buf) or Write sent through the namespace's generic device @fd
 * (/dev/ngXnY): @len bytes, a nonzero multiple of the namespace's logical
 * block (1 << @lba_shift bytes), from block @slba of namespace @nsid
 * (ioctl NVME_IOCTL_ID on @fd says which), to or from offset @buf_off of
 * the dma-buf slot @buf_index, registered with a generic device of the
 * namespace as target.  The offset goes to the command's address as the
 * 64-bit number it is.  The command reaches the controller as one command:
 * -EINVAL in the CQE if it does not fit.  If the exporter moves the buffer
 * before the controller gets it, io_uring issues it again.
 */
void dmabufrw_prep_nvme_read_dmabuf(struct io_uring_sqe *sqe, int fd,
				    unsigned int nsid, unsigned int buf_index,
				    uint64_t buf_off, unsigned int len,
				    uint64_t slba, unsigned int lba_shift);
void dmabufrw_prep_nvme_write_dmabuf(struct io_uring_sqe *sqe, int fd,
				     unsigned int nsid, unsigned int buf_index,
				     uint64_t buf_off, unsigned int len,
				     uint64_t slba, unsigned int lba_shift);

/*
 * Empty slot @index of the ring's buffer table, whatever it holds.  Works
 * on any kernel with sparse buffer tables.  Returns 0.
 */
int dmabufrw_unregister_slot(struct io_uring *ring, unsigned int index);

/* Types of struct dmabufrw_regbuf_desc (IORING_REGBUF_*). */
enum {
	DMABUFRW_REGBUF_EMPTY,
	DMABUFRW_REGBUF_USER,
	DMABUFRW_REGBUF_DMABUF,
};

/*
 * Descriptor of a registered buffer: struct io_uring_regbuf_desc of the
 * series' uAPI, field for field, for headers that predate it.
 */
struct dmabufrw_regbuf_desc {
	uint32_t type;
	uint32_t flags;
	uint64_t addr;
	uint64_t len;
	int32_t dmabuf_fd;
	int32_t target_fd;
	uint64_t __resv[2];
};

_Static_assert(sizeof(struct dmabufrw_regbuf_desc) == 48,
	       "struct io_uring_regbuf_desc is 48 bytes");

/*
 * Register the ring's buffer table from @nr descriptors
 * (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_DESC).  Returns 0.
 */
int dmabufrw_register_buffers_desc(struct io_uring *ring,
				   const struct dmabufrw_regbuf_desc *descs,
				   unsigned int nr);

/*
 * Update @nr slots of the ring's buffer table from @off with descriptors
 * (IORING_REGISTER_BUFFERS_UPDATE with IORING_RSRC_UPDATE_DESC), each with
 * its tag from @tags (none if NULL): a tag is posted as a CQE once the
 * kernel let go of what its slot held; for a dma-buf, once the dma-buf
 * and the target are let go.  Returns the number of slots updated.
 */
int dmabufrw_update_buffers_desc(struct io_uring *ring, unsigned int off,
				 const struct dmabufrw_regbuf_desc *descs,
				 const uint64_t *tags, unsigned int nr);

/*
 * Submit one READ_FIXED (@write 0) or WRITE_FIXED of @len bytes between
 * @addr of registered buffer @idx (an offset for a dma-buf) and offset @off
 * of @fd, and wait for it.  The ring must have no other request in flight:
 * -EBUSY if the completion that comes is not this request's (it is left in
 * the ring).  Returns the CQE's result.
 */
int dmabufrw_rw_fixed(struct io_uring *ring, int write, int fd,
		      unsigned int idx, uint64_t addr, unsigned int len,
		      uint64_t off);

/*
 * Allocate a dma-buf of @size bytes (a multiple of the page size) backed by a
 * sealed memfd through /dev/udmabuf.  If @memfd is not NULL it receives the
 * memfd (the CPU view of the same pages); otherwise the memfd is closed.
 * Returns the dma-buf fd.
 */
int dmabufrw_alloc_udmabuf(size_t size, int *memfd);

/*
 * Allocate a dma-buf of @size bytes from the dma-heap @heap ("system" when
 * NULL), open for reading and writing.  Returns the dma-buf fd.
 */
int dmabufrw_alloc_heap(const char *heap, size_t size);

/* Size of a dma-buf, from lseek(SEEK_END). */
int64_t dmabufrw_size(int dmabuf_fd);

/*
 * Bracket CPU access to a mapped dma-buf (DMA_BUF_IOCTL_SYNC).  @flags is
 * DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE or DMA_BUF_SYNC_RW
 * (<linux/dma-buf.h>): what the CPU does between the two calls.
 */
int dmabufrw_cpu_begin(int dmabuf_fd, uint64_t flags);
int dmabufrw_cpu_end(int dmabuf_fd, uint64_t flags);

/* Name a dma-buf (DMA_BUF_SET_NAME); shows in debugfs and the BPF iterator. */
int dmabufrw_set_name(int dmabuf_fd, const char *name);

/*
 * The fdinfo text of buffer slot @index of the ring @ring_fd of process
 * @pid (0: this process), after "NNNNN: ", into @line: for a dma-buf slot
 * "dmabuf " and its key=value pairs (Observing in dma-buf-io.rst), for an
 * empty slot "<none>".  Returns 0, -ENOENT if the ring lists no such slot,
 * -ENOSPC if @line is too small, or the errno of opening the fdinfo.
 */
int dmabufrw_slot_fdinfo(int pid, int ring_fd, unsigned int index,
			 char *line, size_t size);

/*
 * The value of @key in a line of dmabufrw_slot_fdinfo(), into @val (a
 * value ends at a space: the kernel escapes those of a path).  Returns 0,
 * -ENOENT if the line has no such key, or -ENOSPC if @val is too small;
 * @val is then the empty string.
 */
int dmabufrw_fdinfo_value(const char *line, const char *key, char *val,
			  size_t size);

#ifdef __cplusplus
}
#endif

#endif
