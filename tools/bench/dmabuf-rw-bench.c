// SPDX-License-Identifier: MIT
/*
 * dmabuf-rw-bench: O_DIRECT reads or writes on a block device or a file
 * (ext4, XFS) through io_uring, from plain memory, registered user buffers
 * or a registered dma-buf, in the spirit of fio's t/io_uring.
 *
 * Each thread owns one ring, one target file descriptor and one buffer area
 * of qd * bs bytes: slot i of the queue always uses bytes [i * bs, (i + 1) *
 * bs) of it.  The buffer kind decides how the area is handed to the kernel:
 *
 *   plain            anonymous memory, IORING_OP_READ / IORING_OP_WRITE
 *   fixed            the same memory registered as one fixed buffer,
 *                    READ_FIXED / WRITE_FIXED with sqe->addr the address
 *   dmabuf-udmabuf   a udmabuf (sealed memfd) registered with the target
 *   dmabuf-heap      a dma-heap buffer registered with the target
 *   dmabuf-devmem    device memory: a buffer of the test exporter
 *                    (CONFIG_DMABUF_TEST_EXPORTER) in the BAR of its PCI
 *                    device, no struct pages, registered with the target;
 *                    the dma-buf kinds do READ_FIXED / WRITE_FIXED with
 *                    sqe->addr the offset in the buffer
 *
 * --verify reaches the dma-buf through its CPU mapping (mmap), device
 * memory, which has none, through the exporter's copy ioctl.
 *
 * --passthru sends NVMe Read and Write commands through the namespace's
 * generic device (/dev/ngXnY of DEVICE /dev/nvmeXnY) instead: URING_CMD
 * with the user address (plain), with IORING_URING_CMD_FIXED and the user
 * address (fixed), or with IORING_URING_CMD_FIXED and the offset in a
 * dma-buf registered for the generic device (the dma-buf kinds).
 *
 * Completion latency is the time from just before the submitting
 * io_uring_enter() to the reap that saw the CQE (one clock read per batch,
 * not per I/O); it goes into a log-linear histogram (64 buckets per power of
 * two, under 1.6% error), so long runs cost no memory.
 *
 * CPU time per I/O: the process's user + system time (getrusage) and the
 * busy time of every CPU of the machine (/proc/stat: all but idle and
 * iowait), over the measured window, divided by the I/Os completed in it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/dma-buf.h>
#include <linux/nvme_ioctl.h>
#include <liburing.h>

#include "dmabufrw.h"
#include "dma-buf-test-exporter-uapi.h"

#define TEXP_DEV "/dev/dma_buf_test_exporter"

#define PROG "dmabuf-rw-bench"

enum kind {
	KIND_PLAIN,
	KIND_FIXED,
	KIND_UDMABUF,
	KIND_HEAP,
	KIND_DEVMEM,
	NR_KINDS,
};

static const char *const kind_names[NR_KINDS] = {
	[KIND_PLAIN]	= "plain",
	[KIND_FIXED]	= "fixed",
	[KIND_UDMABUF]	= "dmabuf-udmabuf",
	[KIND_HEAP]	= "dmabuf-heap",
	[KIND_DEVMEM]	= "dmabuf-devmem",
};

static bool kind_is_dmabuf(enum kind k)
{
	return k == KIND_UDMABUF || k == KIND_HEAP || k == KIND_DEVMEM;
}

#define MAX_TAGS	16
#define MAX_THREADS	64
#define MAX_QD		4096

struct options {
	const char *dev;
	enum kind kind;
	bool write;
	bool rand;
	unsigned int bs;
	unsigned int qd;
	unsigned int sbatch;		/* 0: default */
	unsigned int cbatch;		/* 0: default */
	unsigned int threads;
	double runtime;			/* seconds, 0: by I/O count */
	double ramp;			/* seconds, < 0: default */
	uint64_t ios;			/* total, 0: by time */
	uint64_t offset;
	uint64_t size;			/* 0: to the end of the device */
	bool fixed_files;
	bool iopoll;
	bool passthru;
	unsigned int lba_shift;		/* --passthru: of the namespace */
	bool pin;
	bool verify;
	bool kv;
	bool csv;
	bool quiet;
	bool mark_window;
	uint64_t seed;
	bool seed_set;
	const char *heap;
	const char *tags[MAX_TAGS];
	unsigned int nr_tags;
};

static struct options opt = {
	.dev = "/dev/nvme0n1",
	.kind = KIND_FIXED,
	.rand = true,
	.bs = 4096,
	.qd = 32,
	.threads = 1,
	.ramp = -1,
	.fixed_files = true,
	.heap = "system",
};

/* ------------------------------------------------------------------ */
/* Latency histogram                                                    */

#define HIST_SUB_BITS	6
#define HIST_SUB	(1U << HIST_SUB_BITS)
#define HIST_MAX_SHIFT	40
#define HIST_BUCKETS	((HIST_MAX_SHIFT + 2) * HIST_SUB)

/*
 * Values below 2 * HIST_SUB ns have a bucket each; above, every power of two
 * is split into HIST_SUB buckets.
 */
static unsigned int hist_index(uint64_t ns)
{
	unsigned int e;

	if (ns < 2 * HIST_SUB)
		return ns;
	e = 63 - __builtin_clzll(ns) - HIST_SUB_BITS;
	if (e > HIST_MAX_SHIFT)
		return HIST_BUCKETS - 1;
	return e * HIST_SUB + (ns >> e);
}

/* The middle of bucket @idx, in ns. */
static double hist_value(unsigned int idx)
{
	unsigned int e = idx < 2 * HIST_SUB ? 0 : idx / HIST_SUB - 1;
	uint64_t low = (uint64_t)(idx - e * HIST_SUB) << e;

	return low + ((1ULL << e) - 1) / 2.0;
}

/* The @pct percentile, in ns, of @total samples. */
static double hist_percentile(const uint64_t *hist, uint64_t total, double pct)
{
	uint64_t rank = (uint64_t)ceil(pct / 100.0 * total), seen = 0;
	unsigned int i;

	if (!total)
		return 0;
	if (!rank)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += hist[i];
		if (seen >= rank)
			return hist_value(i);
	}
	return hist_value(HIST_BUCKETS - 1);
}

/* ------------------------------------------------------------------ */
/* Workers                                                              */

enum phase { PH_RAMP, PH_RUN, PH_STOP };
enum pass { PASS_BENCH, PASS_VWRITE, PASS_VREAD };

static _Atomic int phase;
static _Atomic int failed;

struct worker {
	unsigned int id;
	pthread_t tid;
	struct io_uring ring;
	int fd;				/* --passthru: the generic device */
	int sqe_fd;			/* 0 with registered files */
	unsigned int nsid;		/* --passthru */
	int dmabuf_fd;
	int texp_fd;			/* dmabuf-devmem: the exporter, or -1 */
	char *cpu;			/* CPU view of the buffer area, or NULL;
					 * dmabuf-devmem: a copy of it */
	size_t area_len;
	uint64_t first_block;		/* of the part of the region used */
	uint64_t nr_blocks;
	uint64_t seq_next;
	uint64_t rng;

	uint64_t *slot_off;		/* device offset of each slot's I/O */
	uint64_t *slot_stamp;		/* submission time, ns */
	unsigned int *free_slots;
	unsigned int nr_free;
	unsigned int inflight;

	/* counted completions */
	uint64_t done;
	uint64_t lat_sum;
	uint64_t lat_max;
	uint64_t *hist;
	uint64_t end_ns;

	/* --verify */
	uint8_t *written;		/* bitmap of nr_blocks */
	uint64_t vread_next;
	uint64_t verified;
	uint64_t mismatches;
};

static struct worker *workers;

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	exit(2);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 32);
}

/* The pattern --verify writes: a function of the seed and the disk offset. */
static uint64_t pattern(uint64_t disk_off)
{
	return mix64(opt.seed ^ (disk_off * 0x9e3779b97f4a7c15ULL));
}

static void cpu_access(struct worker *w, bool begin, bool read, bool write)
{
	uint64_t flags = (read ? DMA_BUF_SYNC_READ : 0) |
			 (write ? DMA_BUF_SYNC_WRITE : 0);
	int ret;

	if (w->dmabuf_fd < 0 || w->texp_fd >= 0)
		return;
	ret = begin ? dmabufrw_cpu_begin(w->dmabuf_fd, flags) :
		      dmabufrw_cpu_end(w->dmabuf_fd, flags);
	if (ret)
		die("thread %u: DMA_BUF_IOCTL_SYNC: %s", w->id, strerror(-ret));
}

/* dmabuf-devmem: copy a slot between the CPU copy and the device memory. */
static void devmem_copy(struct worker *w, unsigned int slot, bool to_devmem)
{
	struct dmabuf_test_rw rw = {
		.fd = w->dmabuf_fd,
		.flags = to_devmem ? DMABUF_TEST_RW_WRITE : 0,
		.offset = (uint64_t)slot * opt.bs,
		.len = opt.bs,
		.ptr = (uintptr_t)(w->cpu + (size_t)slot * opt.bs),
	};

	if (w->texp_fd >= 0 && ioctl(w->texp_fd, DMABUF_TEST_IOC_RW, &rw))
		die("thread %u: copy %s device memory: %s", w->id,
		    to_devmem ? "to" : "from", strerror(errno));
}

static void fill_slot(struct worker *w, unsigned int slot, uint64_t off)
{
	uint64_t *p = (uint64_t *)(w->cpu + (size_t)slot * opt.bs);
	unsigned int i;

	cpu_access(w, true, false, true);
	for (i = 0; i < opt.bs / 8; i++)
		p[i] = pattern(off + i * 8);
	cpu_access(w, false, false, true);
	devmem_copy(w, slot, true);
}

static void poison_slot(struct worker *w, unsigned int slot)
{
	cpu_access(w, true, false, true);
	memset(w->cpu + (size_t)slot * opt.bs, 0xa5, opt.bs);
	cpu_access(w, false, false, true);
	devmem_copy(w, slot, true);
}

static void check_slot(struct worker *w, unsigned int slot, uint64_t off)
{
	const uint64_t *p = (uint64_t *)(w->cpu + (size_t)slot * opt.bs);
	unsigned int i;

	devmem_copy(w, slot, false);
	cpu_access(w, true, true, false);
	for (i = 0; i < opt.bs / 8; i++) {
		if (p[i] == pattern(off + i * 8))
			continue;
		if (!w->mismatches)
			fprintf(stderr, PROG ": thread %u: MISMATCH at disk offset %" PRIu64
				": read %016" PRIx64 ", wrote %016" PRIx64 "\n",
				w->id, off + i * 8, p[i], pattern(off + i * 8));
		w->mismatches++;
		break;
	}
	cpu_access(w, false, true, false);
	w->verified++;
}

static uint64_t next_block(struct worker *w, enum pass pass)
{
	uint64_t b;

	if (pass == PASS_VREAD) {
		b = w->vread_next;
		while (!(w->written[b / 8] & (1 << (b % 8))))
			b++;
		w->vread_next = b + 1;
	} else if (opt.rand) {
		b = ((unsigned __int128)rng_next(&w->rng) * w->nr_blocks) >> 64;
	} else {
		b = w->seq_next;
		if (++w->seq_next == w->nr_blocks)
			w->seq_next = 0;
	}
	if (pass == PASS_VWRITE)
		w->written[b / 8] |= 1 << (b % 8);
	return b;
}

/*
 * --passthru: an NVMe Read or Write of one block of --bs bytes at @off;
 * @addr is the user address (plain, fixed) or the offset in the dma-buf.
 * A registered user buffer's command is the dma-buf one with the address
 * in place of the offset; plain memory's has no IORING_URING_CMD_FIXED.
 */
static void prep_passthru(struct worker *w, struct io_uring_sqe *sqe,
			  bool write, uint64_t addr, uint64_t off)
{
	if (write)
		dmabufrw_prep_nvme_write_dmabuf(sqe, w->sqe_fd, w->nsid, 0, addr,
			opt.bs, off >> opt.lba_shift, opt.lba_shift);
	else
		dmabufrw_prep_nvme_read_dmabuf(sqe, w->sqe_fd, w->nsid, 0, addr,
			opt.bs, off >> opt.lba_shift, opt.lba_shift);
	if (opt.kind == KIND_PLAIN)
		sqe->uring_cmd_flags = 0;
}

static void prep_one(struct worker *w, enum pass pass, uint64_t stamp)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	unsigned int slot = w->free_slots[--w->nr_free];
	size_t area_off = (size_t)slot * opt.bs;
	bool write = pass == PASS_BENCH ? opt.write : pass == PASS_VWRITE;
	uint64_t off = opt.offset + (w->first_block + next_block(w, pass)) * opt.bs;
	void *addr;

	if (pass == PASS_VWRITE)
		fill_slot(w, slot, off);
	else if (pass == PASS_VREAD)
		poison_slot(w, slot);

	addr = kind_is_dmabuf(opt.kind) ? (void *)(uintptr_t)area_off :
					  w->cpu + area_off;
	if (opt.passthru)
		prep_passthru(w, sqe, write, (uintptr_t)addr, off);
	else switch (opt.kind) {
	case KIND_PLAIN:
		if (write)
			io_uring_prep_write(sqe, w->sqe_fd, addr, opt.bs, off);
		else
			io_uring_prep_read(sqe, w->sqe_fd, addr, opt.bs, off);
		break;
	default:
		if (write)
			io_uring_prep_write_fixed(sqe, w->sqe_fd, addr, opt.bs, off, 0);
		else
			io_uring_prep_read_fixed(sqe, w->sqe_fd, addr, opt.bs, off, 0);
		break;
	}
	if (opt.fixed_files)
		sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = slot;
	w->slot_off[slot] = off;
	w->slot_stamp[slot] = stamp;
	w->inflight++;
}

static void complete_one(struct worker *w, enum pass pass,
			 const struct io_uring_cqe *cqe, uint64_t now,
			 bool counted)
{
	unsigned int slot = cqe->user_data;
	uint64_t lat;

	w->inflight--;
	w->free_slots[w->nr_free++] = slot;
	/* a passthrough command's result is its NVMe status, 0 */
	if (cqe->res != (opt.passthru ? 0 : (int)opt.bs)) {
		if (!atomic_exchange(&failed, 1))
			fprintf(stderr, PROG ": thread %u: I/O at offset %" PRIu64 ": %s\n",
				w->id, w->slot_off[slot],
				cqe->res < 0 ? strerror(-cqe->res) :
				opt.passthru ? "NVMe error status" : "short transfer");
		return;
	}
	if (pass == PASS_VREAD)
		check_slot(w, slot, w->slot_off[slot]);
	if (!counted)
		return;
	w->done++;
	if (pass != PASS_BENCH)
		return;
	lat = now - w->slot_stamp[slot];
	w->lat_sum += lat;
	if (lat > w->lat_max)
		w->lat_max = lat;
	w->hist[hist_index(lat)]++;
}

static unsigned int min_u(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * Keep up to qd I/Os in flight: prepare and submit up to sbatch at a time;
 * when the queue is full (or nothing more is to be submitted), wait for
 * cbatch completions.  In the benchmark pass, completions count only while
 * the phase is PH_RUN; with a quota, no more is submitted than the quota
 * allows to complete.
 */
static void run_pass(struct worker *w, enum pass pass, uint64_t quota)
{
	bool stopping = false;

	while (!stopping || w->inflight) {
		bool counting = pass != PASS_BENCH ||
				atomic_load_explicit(&phase, memory_order_relaxed) == PH_RUN;
		unsigned int want = 0, wait_nr = 0, n = 0, head;
		struct io_uring_cqe *cqe;
		uint64_t now;
		int ret;

		if (!stopping &&
		    (atomic_load_explicit(&failed, memory_order_relaxed) ||
		     (pass == PASS_BENCH && atomic_load_explicit(&phase, memory_order_relaxed) == PH_STOP) ||
		     (quota && counting && w->done >= quota)))
			stopping = true;
		if (!stopping) {
			want = min_u(opt.qd - w->inflight, opt.sbatch);
			if (quota && counting)
				want = w->done + w->inflight >= quota ? 0 :
				       min_u(want, quota - w->done - w->inflight);
		}
		if (want) {
			uint64_t stamp = now_ns();

			for (unsigned int i = 0; i < want; i++)
				prep_one(w, pass, stamp);
		}
		if (w->inflight && (w->inflight == opt.qd || !want))
			wait_nr = min_u(opt.cbatch, w->inflight);
		ret = io_uring_submit_and_wait(&w->ring, wait_nr);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			if (!atomic_exchange(&failed, 1))
				fprintf(stderr, PROG ": thread %u: io_uring_enter: %s\n",
					w->id, strerror(-ret));
			break;
		}
		if (!io_uring_cq_ready(&w->ring))
			continue;
		now = now_ns();
		/* a completion is counted if the window was open when reaped */
		counting = pass != PASS_BENCH ||
			   atomic_load_explicit(&phase, memory_order_relaxed) == PH_RUN;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			complete_one(w, pass, cqe, now, counting);
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
	}
	w->end_ns = now_ns();
}

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	uint64_t quota = opt.ios ? opt.ios / opt.threads +
				   (w->id < opt.ios % opt.threads) : 0;

	if (opt.pin) {
		cpu_set_t set;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET(w->id % (ncpu > 0 ? ncpu : 1), &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	if (opt.verify) {
		run_pass(w, PASS_VWRITE, quota);
		if (!atomic_load(&failed)) {
			uint64_t distinct = 0;

			for (uint64_t b = 0; b < w->nr_blocks; b++)
				distinct += !!(w->written[b / 8] & (1 << (b % 8)));
			w->done = 0;
			run_pass(w, PASS_VREAD, distinct);
		}
	} else {
		run_pass(w, PASS_BENCH, quota);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                               */

/*
 * dmabuf-devmem: a buffer of the area's size in the BAR of the test
 * exporter's PCI device; the exporter's descriptor stays open in
 * w->texp_fd for --verify's copies.  The new dma-buf's fd or -errno.
 */
static int alloc_devmem(struct worker *w)
{
	struct dmabuf_test_create c = {
		.size = w->area_len,
		.flags = DMABUF_TEST_F_DEVMEM,
	};

	w->texp_fd = open(TEXP_DEV, O_RDWR | O_CLOEXEC);
	if (w->texp_fd < 0)
		return -errno;
	return ioctl(w->texp_fd, DMABUF_TEST_IOC_CREATE, &c) ? -errno : c.fd;
}

static void setup_worker(struct worker *w, uint64_t region_blocks)
{
	struct io_uring_params p = {
		.flags = IORING_SETUP_CQSIZE | (opt.iopoll ? IORING_SETUP_IOPOLL : 0) |
			 (opt.passthru ? IORING_SETUP_SQE128 | IORING_SETUP_CQE32 : 0),
	};
	unsigned int entries = 1, i;
	long page = sysconf(_SC_PAGESIZE);
	int ret, flags;

	w->dmabuf_fd = w->texp_fd = -1;
	w->rng = mix64(opt.seed + w->id + 1) | 1;
	/* sequential and verify runs split the region between the threads */
	if (!opt.rand || opt.verify) {
		w->first_block = region_blocks * w->id / opt.threads;
		w->nr_blocks = region_blocks * (w->id + 1) / opt.threads - w->first_block;
	} else {
		w->first_block = 0;
		w->nr_blocks = region_blocks;
	}
	if (!w->nr_blocks)
		die("the region is too small for %u threads", opt.threads);

	flags = (opt.write || opt.verify ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC;
	if (opt.passthru) {
		char ng[64];
		int c, n;

		if (sscanf(opt.dev, "/dev/nvme%dn%d", &c, &n) != 2)
			die("--passthru: %s is not an NVMe namespace /dev/nvmeXnY",
			    opt.dev);
		snprintf(ng, sizeof(ng), "/dev/ng%dn%d", c, n);
		w->fd = open(ng, flags & ~O_DIRECT);
		if (w->fd < 0)
			die("open %s: %s", ng, strerror(errno));
		ret = ioctl(w->fd, NVME_IOCTL_ID);
		if (ret <= 0)
			die("%s: NVME_IOCTL_ID: %s", ng, strerror(errno));
		w->nsid = ret;
	} else {
		w->fd = open(opt.dev, flags);
		if (w->fd < 0)
			die("open %s: %s", opt.dev, strerror(errno));
	}

	while (entries < opt.qd)
		entries <<= 1;
	p.cq_entries = entries * 2;
	ret = io_uring_queue_init_params(entries, &w->ring, &p);
	if (ret)
		die("io_uring_queue_init(%u): %s", entries, strerror(-ret));
	w->sqe_fd = w->fd;
	if (opt.fixed_files) {
		ret = io_uring_register_files(&w->ring, &w->fd, 1);
		if (ret)
			die("io_uring_register_files: %s", strerror(-ret));
		w->sqe_fd = 0;
	}

	w->area_len = ((size_t)opt.qd * opt.bs + page - 1) / page * page;
	switch (opt.kind) {
	case KIND_PLAIN:
	case KIND_FIXED:
		w->cpu = mmap(NULL, w->area_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (w->cpu == MAP_FAILED)
			die("mmap %zu bytes: %s", w->area_len, strerror(errno));
		if (opt.kind == KIND_FIXED) {
			struct iovec iov = { w->cpu, w->area_len };

			ret = io_uring_register_buffers(&w->ring, &iov, 1);
			if (ret)
				die("io_uring_register_buffers: %s", strerror(-ret));
		}
		break;
	case KIND_UDMABUF:
	case KIND_HEAP:
	case KIND_DEVMEM:
		if (opt.kind == KIND_UDMABUF)
			ret = dmabufrw_alloc_udmabuf(w->area_len, NULL);
		else if (opt.kind == KIND_HEAP)
			ret = dmabufrw_alloc_heap(opt.heap, w->area_len);
		else
			ret = alloc_devmem(w);
		if (ret < 0)
			die("allocating a %zu-byte %s: %s", w->area_len,
			    opt.kind == KIND_UDMABUF ? "udmabuf" :
			    opt.kind == KIND_HEAP ? "dma-heap buffer" :
			    "device-memory buffer (" TEXP_DEV ")",
			    strerror(-ret));
		w->dmabuf_fd = ret;
		ret = io_uring_register_buffers_sparse(&w->ring, 1);
		if (ret)
			die("io_uring_register_buffers_sparse: %s", strerror(-ret));
		ret = dmabufrw_register_dmabuf(&w->ring, 0, w->dmabuf_fd, w->fd);
		if (ret)
			die("registering the dma-buf for %s: %s%s", opt.dev,
			    strerror(-ret), ret == -EINVAL || ret == -EOPNOTSUPP ?
			    " (a kernel without the dmabuf-rw series, or a target that cannot do dma-buf I/O?)" : "");
		if (opt.verify && opt.kind == KIND_DEVMEM) {
			w->cpu = mmap(NULL, w->area_len, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (w->cpu == MAP_FAILED)
				die("mmap %zu bytes: %s", w->area_len, strerror(errno));
		} else if (opt.verify) {
			w->cpu = mmap(NULL, w->area_len, PROT_READ | PROT_WRITE,
				      MAP_SHARED, w->dmabuf_fd, 0);
			if (w->cpu == MAP_FAILED)
				die("mmap of the dma-buf: %s", strerror(errno));
		}
		break;
	default:
		break;
	}

	w->slot_off = calloc(opt.qd, sizeof(*w->slot_off));
	w->slot_stamp = calloc(opt.qd, sizeof(*w->slot_stamp));
	w->free_slots = calloc(opt.qd, sizeof(*w->free_slots));
	w->hist = calloc(HIST_BUCKETS, sizeof(*w->hist));
	if (!w->slot_off || !w->slot_stamp || !w->free_slots || !w->hist)
		die("out of memory");
	for (i = 0; i < opt.qd; i++)
		w->free_slots[w->nr_free++] = opt.qd - 1 - i;
	if (opt.verify) {
		w->written = calloc((w->nr_blocks + 7) / 8, 1);
		if (!w->written)
			die("out of memory");
	}
}

static void teardown_worker(struct worker *w)
{
	io_uring_queue_exit(&w->ring);
	if (w->cpu)
		munmap(w->cpu, w->area_len);
	if (w->dmabuf_fd >= 0)
		close(w->dmabuf_fd);
	if (w->texp_fd >= 0)
		close(w->texp_fd);
	close(w->fd);
	free(w->slot_off);
	free(w->slot_stamp);
	free(w->free_slots);
	free(w->hist);
	free(w->written);
}

static uint64_t device_size(const char *dev, unsigned int *lbs)
{
	struct stat st;
	uint64_t size = 0;
	int fd, ssz = 512;

	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s: %s", dev, strerror(errno));
	if (fstat(fd, &st))
		die("stat %s: %s", dev, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) || ioctl(fd, BLKSSZGET, &ssz))
			die("%s: block device size: %s", dev, strerror(errno));
	} else if (S_ISREG(st.st_mode)) {
		struct statx stx;

		size = st.st_size;
		/* the file system's direct I/O alignment, where it says it */
		if (!statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) &&
		    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
			ssz = stx.stx_dio_offset_align;
	} else {
		die("%s is neither a block device nor a file", dev);
	}
	close(fd);
	*lbs = ssz;
	return size;
}

/* ------------------------------------------------------------------ */
/* CPU accounting                                                       */

struct snapshot {
	uint64_t ns;
	uint64_t proc_user_us;
	uint64_t proc_sys_us;
	uint64_t sys_busy;		/* ticks */
	uint64_t sys_total;		/* ticks */
};

static void take_snapshot(struct snapshot *s)
{
	unsigned long long v[10] = { 0 };
	struct rusage ru;
	FILE *f;

	getrusage(RUSAGE_SELF, &ru);
	s->proc_user_us = ru.ru_utime.tv_sec * 1000000ULL + ru.ru_utime.tv_usec;
	s->proc_sys_us = ru.ru_stime.tv_sec * 1000000ULL + ru.ru_stime.tv_usec;
	s->sys_busy = s->sys_total = 0;
	f = fopen("/proc/stat", "r");
	if (f) {
		/* cpu user nice system idle iowait irq softirq steal guest guest_nice */
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
			s->sys_busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
			s->sys_total = s->sys_busy + v[3] + v[4];
		}
		fclose(f);
	}
	s->ns = now_ns();
}

/*
 * --mark-window: instructions that do nothing and that compilers do not
 * emit, which the instruction-counting QEMU plugin watches for.
 */
static void mark_window(bool open)
{
#if defined(__x86_64__)
	if (!opt.mark_window)
		return;
	if (open)
		asm volatile("xchg %%rcx, %%rcx" ::: "memory");
	else
		asm volatile("xchg %%rdx, %%rdx" ::: "memory");
#endif
}

/* ------------------------------------------------------------------ */
/* Options                                                              */

static void usage(void)
{
	printf(
"Usage: " PROG " [OPTIONS] [DEVICE]\n"
"\n"
"O_DIRECT reads or writes on DEVICE (default /dev/nvme0n1), or on a regular\n"
"file of at least --offset + --size bytes (the dma-buf kinds need a file\n"
"system with dma-buf I/O: ext4, XFS), through io_uring, one ring per thread.\n"
"\n"
"Workload:\n"
"  -k, --kind KIND          buffer kind (default fixed):\n"
"                             plain           anonymous memory, IORING_OP_READ/WRITE\n"
"                             fixed           registered user memory, READ/WRITE_FIXED\n"
"                             dmabuf-udmabuf  a registered udmabuf, READ/WRITE_FIXED\n"
"                             dmabuf-heap     a registered dma-heap buffer, READ/WRITE_FIXED\n"
"                             dmabuf-devmem   a registered device-memory buffer of the\n"
"                                             test exporter, READ/WRITE_FIXED\n"
"  -w, --rw RW              randread (default), randwrite, read or write\n"
"                           (read and write are sequential)\n"
"  -b, --bs SIZE            block size, a multiple of the logical block size\n"
"                           (default 4k; suffixes k, m, g are powers of 1024)\n"
"  -q, --qd N               queue depth per thread (default 32, at most %u)\n"
"  -s, --submit-batch N     submit up to N I/Os per io_uring_enter (default qd/4,\n"
"                           at least 1)\n"
"  -c, --complete-batch N   when the queue is full, wait for N completions\n"
"                           (default qd/4, at least 1)\n"
"  -j, --threads N          threads, each with its own ring, target descriptor\n"
"                           and buffer area (default 1, at most %u)\n"
"  -o, --offset SIZE        start of the region used on DEVICE (default 0)\n"
"  -S, --size SIZE          length of the region (default: to the end of DEVICE)\n"
"                           random offsets are uniform over the region, aligned\n"
"                           to the block size; sequential runs split it between\n"
"                           the threads and wrap around\n"
"      --heap NAME          dma-heap for dmabuf-heap (default system)\n"
"      --no-fixed-files     do not register the target descriptor with the ring\n"
"      --iopoll             polled rings (IORING_SETUP_IOPOLL): completions are\n"
"                           reaped from the device's poll queues, which need\n"
"                           nvme.poll_queues (the VM's kernel line has it)\n"
"      --passthru           NVMe passthrough: Read and Write commands through the\n"
"                           generic device /dev/ngXnY of DEVICE /dev/nvmeXnY\n"
"                           (URING_CMD; the fixed and dma-buf kinds with\n"
"                           IORING_URING_CMD_FIXED, the dma-buf registered for\n"
"                           the generic device); each I/O one command, so --bs\n"
"                           at most the namespace's max_hw_sectors_kb\n"
"      --pin                pin thread i to CPU i (modulo the online CPUs)\n"
"      --seed N             random seed (default: from the clock)\n"
"\n"
"Duration:\n"
"  -t, --runtime SECONDS    measure for this long (default 5; fractions allowed)\n"
"  -n, --ios N              measure N I/Os in total instead (split between threads)\n"
"  -r, --ramp SECONDS       warm-up before measuring: I/O runs but is not counted\n"
"                           (default 0.5; 0 with --verify)\n"
"\n"
"Correctness:\n"
"  -V, --verify             write a pattern (a function of the seed and the disk\n"
"                           offset) to N blocks (--ios, default 1024) at random or\n"
"                           sequential offsets as -w says, then read back every\n"
"                           block written and compare; both passes use KIND and\n"
"                           the queue settings.  dma-buf contents are filled and\n"
"                           checked through an mmap of the dma-buf between\n"
"                           DMA_BUF_IOCTL_SYNC calls.  Exit status 1 on a mismatch.\n"
"\n"
"Output:\n"
"      --kv                 also print one line 'BENCH key=value ...' with every\n"
"                           result (tags first)\n"
"      --csv                also print a CSV header line and one CSV row\n"
"      --tag KEY=VALUE      add KEY=VALUE to the --kv and --csv output (repeatable)\n"
"  -Q, --quiet              no human-readable summary\n"
"      --mark-window        execute a marker instruction when the measured window\n"
"                           opens (xchg %%rcx,%%rcx) and when it closes\n"
"                           (xchg %%rdx,%%rdx), for an instruction-counting QEMU\n"
"                           plugin (tools/qemu-plugin/insn-count.c; x86_64)\n"
"  -h, --help               this text\n"
"\n"
"Results: IOPS and MB/s (10^6 bytes/s) over the measured window; completion\n"
"latency (submit to reap, one clock read per batch) avg/p50/p99/p99.9/max from\n"
"a log-linear histogram; CPU time per I/O of this process (getrusage user+sys)\n"
"and of the whole machine (/proc/stat: every CPU's time outside idle and\n"
"iowait), both over the window.\n"
"\n"
"Exit status: 0 success, 1 setup, I/O or verify failure, 2 bad options.\n",
	       MAX_QD, MAX_THREADS);
}

static uint64_t parse_size(const char *name, const char *s)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		die_usage("%s: not a size: '%s'", name, s);
	switch (*end) {
	case 'g': case 'G': v <<= 10; /* fall through */
	case 'm': case 'M': v <<= 10; /* fall through */
	case 'k': case 'K': v <<= 10; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'b' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		die_usage("%s: not a size: '%s'", name, s);
	return v;
}

static unsigned int parse_uint(const char *name, const char *s,
			       unsigned int min, unsigned int max)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		die_usage("%s: '%s' is not an integer in [%u, %u]", name, s, min, max);
	return v;
}

static double parse_seconds(const char *name, const char *s)
{
	double v;
	char *end;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		die_usage("%s: not a time in seconds: '%s'", name, s);
	if (!strcmp(end, "ms"))
		v /= 1000;
	else if (*end && strcmp(end, "s"))
		die_usage("%s: not a time in seconds: '%s'", name, s);
	return v;
}

enum {
	OPT_HEAP = 256,
	OPT_NO_FIXED_FILES,
	OPT_IOPOLL,
	OPT_PASSTHRU,
	OPT_PIN,
	OPT_SEED,
	OPT_KV,
	OPT_CSV,
	OPT_TAG,
	OPT_MARK_WINDOW,
};

static const struct option long_opts[] = {
	{ "kind",		required_argument, NULL, 'k' },
	{ "rw",			required_argument, NULL, 'w' },
	{ "bs",			required_argument, NULL, 'b' },
	{ "qd",			required_argument, NULL, 'q' },
	{ "submit-batch",	required_argument, NULL, 's' },
	{ "complete-batch",	required_argument, NULL, 'c' },
	{ "threads",		required_argument, NULL, 'j' },
	{ "offset",		required_argument, NULL, 'o' },
	{ "size",		required_argument, NULL, 'S' },
	{ "runtime",		required_argument, NULL, 't' },
	{ "ios",		required_argument, NULL, 'n' },
	{ "ramp",		required_argument, NULL, 'r' },
	{ "verify",		no_argument,	   NULL, 'V' },
	{ "quiet",		no_argument,	   NULL, 'Q' },
	{ "help",		no_argument,	   NULL, 'h' },
	{ "heap",		required_argument, NULL, OPT_HEAP },
	{ "no-fixed-files",	no_argument,	   NULL, OPT_NO_FIXED_FILES },
	{ "iopoll",		no_argument,	   NULL, OPT_IOPOLL },
	{ "passthru",		no_argument,	   NULL, OPT_PASSTHRU },
	{ "pin",		no_argument,	   NULL, OPT_PIN },
	{ "seed",		required_argument, NULL, OPT_SEED },
	{ "kv",			no_argument,	   NULL, OPT_KV },
	{ "csv",		no_argument,	   NULL, OPT_CSV },
	{ "tag",		required_argument, NULL, OPT_TAG },
	{ "mark-window",	no_argument,	   NULL, OPT_MARK_WINDOW },
	{ NULL, 0, NULL, 0 },
};

static void parse_options(int argc, char **argv)
{
	bool runtime_set = false;
	int c, k;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":k:w:b:q:s:c:j:o:S:t:n:r:VQh",
				long_opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			for (k = 0; k < NR_KINDS; k++)
				if (!strcmp(optarg, kind_names[k]))
					break;
			if (k == NR_KINDS)
				die_usage("--kind: unknown kind '%s' (plain, fixed, dmabuf-udmabuf, dmabuf-heap, dmabuf-devmem)",
					  optarg);
			opt.kind = k;
			break;
		case 'w':
			if (!strcmp(optarg, "randread"))
				opt.rand = true, opt.write = false;
			else if (!strcmp(optarg, "randwrite"))
				opt.rand = true, opt.write = true;
			else if (!strcmp(optarg, "read"))
				opt.rand = false, opt.write = false;
			else if (!strcmp(optarg, "write"))
				opt.rand = false, opt.write = true;
			else
				die_usage("--rw: unknown pattern '%s' (randread, randwrite, read, write)",
					  optarg);
			break;
		case 'b': {
			uint64_t bs = parse_size("--bs", optarg);

			if (!bs || bs % 512 || bs > (1U << 30))
				die_usage("--bs: %s is not a multiple of 512 between 512 and 1g", optarg);
			opt.bs = bs;
			break;
		}
		case 'q':
			opt.qd = parse_uint("--qd", optarg, 1, MAX_QD);
			break;
		case 's':
			opt.sbatch = parse_uint("--submit-batch", optarg, 1, MAX_QD);
			break;
		case 'c':
			opt.cbatch = parse_uint("--complete-batch", optarg, 1, MAX_QD);
			break;
		case 'j':
			opt.threads = parse_uint("--threads", optarg, 1, MAX_THREADS);
			break;
		case 'o':
			opt.offset = parse_size("--offset", optarg);
			break;
		case 'S':
			opt.size = parse_size("--size", optarg);
			if (!opt.size)
				die_usage("--size: must not be 0");
			break;
		case 't':
			opt.runtime = parse_seconds("--runtime", optarg);
			if (opt.runtime <= 0)
				die_usage("--runtime: must be more than 0");
			runtime_set = true;
			break;
		case 'n': {
			char *end;

			errno = 0;
			opt.ios = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || *optarg == '-' || !opt.ios)
				die_usage("--ios: '%s' is not a positive integer", optarg);
			break;
		}
		case 'r':
			opt.ramp = parse_seconds("--ramp", optarg);
			break;
		case 'V':
			opt.verify = true;
			break;
		case 'Q':
			opt.quiet = true;
			break;
		case 'h':
			usage();
			exit(0);
		case OPT_HEAP:
			opt.heap = optarg;
			break;
		case OPT_NO_FIXED_FILES:
			opt.fixed_files = false;
			break;
		case OPT_PASSTHRU:
			opt.passthru = true;
			break;
		case OPT_IOPOLL:
			opt.iopoll = true;
			break;
		case OPT_PIN:
			opt.pin = true;
			break;
		case OPT_SEED: {
			char *end;

			errno = 0;
			opt.seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end)
				die_usage("--seed: '%s' is not an integer", optarg);
			opt.seed_set = true;
			break;
		}
		case OPT_KV:
			opt.kv = true;
			break;
		case OPT_CSV:
			opt.csv = true;
			break;
		case OPT_TAG:
			if (!strchr(optarg, '=') || *optarg == '=' ||
			    strpbrk(optarg, " \t\n,\""))
				die_usage("--tag: '%s' is not KEY=VALUE without spaces or commas",
					  optarg);
			if (opt.nr_tags == MAX_TAGS)
				die_usage("--tag: at most %d tags", MAX_TAGS);
			opt.tags[opt.nr_tags++] = optarg;
			break;
		case OPT_MARK_WINDOW:
#if defined(__x86_64__)
			opt.mark_window = true;
#else
			die_usage("--mark-window: x86_64 only");
#endif
			break;
		case ':':
			die_usage("option '%s' needs an argument", argv[optind - 1]);
			break;
		default:
			if (optopt)
				die_usage("unknown option '-%c'", optopt);
			die_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		opt.dev = argv[optind++];
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);

	if (runtime_set && opt.ios)
		die_usage("--runtime and --ios exclude each other");
	if (opt.verify && runtime_set)
		die_usage("--verify runs a number of I/Os (--ios), not a time");
	if (!runtime_set && !opt.ios) {
		if (opt.verify)
			opt.ios = 1024;
		else
			opt.runtime = 5;
	}
	if (opt.ramp < 0)
		opt.ramp = opt.verify ? 0 : 0.5;
	if (opt.verify && opt.ramp > 0)
		die_usage("--verify has no warm-up; drop --ramp");
	if (!opt.sbatch)
		opt.sbatch = opt.qd / 4 ? opt.qd / 4 : 1;
	if (!opt.cbatch)
		opt.cbatch = opt.qd / 4 ? opt.qd / 4 : 1;
	if (opt.sbatch > opt.qd)
		die_usage("--submit-batch %u is larger than --qd %u", opt.sbatch, opt.qd);
	if (opt.cbatch > opt.qd)
		die_usage("--complete-batch %u is larger than --qd %u", opt.cbatch, opt.qd);
	if (opt.ios && opt.ios < opt.threads)
		die_usage("--ios %" PRIu64 " is less than one per thread", opt.ios);
	if (!opt.seed_set)
		opt.seed = now_ns() ^ ((uint64_t)getpid() << 32);
}

/* ------------------------------------------------------------------ */
/* Results                                                              */

struct field {
	char key[32];
	char val[64];
};

static struct field fields[64];
static unsigned int nr_fields;

static void add_field(const char *key, const char *fmt, ...)
{
	struct field *f = &fields[nr_fields++];
	va_list ap;

	snprintf(f->key, sizeof(f->key), "%s", key);
	va_start(ap, fmt);
	vsnprintf(f->val, sizeof(f->val), fmt, ap);
	va_end(ap);
}

static void print_machine_readable(void)
{
	unsigned int i;

	if (opt.kv) {
		printf("BENCH");
		for (i = 0; i < nr_fields; i++)
			printf(" %s=%s", fields[i].key, fields[i].val);
		printf("\n");
	}
	if (opt.csv) {
		for (i = 0; i < nr_fields; i++)
			printf("%s%s", i ? "," : "", fields[i].key);
		printf("\n");
		for (i = 0; i < nr_fields; i++)
			printf("%s%s", i ? "," : "", fields[i].val);
		printf("\n");
	}
}

static void add_tags(void)
{
	unsigned int i;

	for (i = 0; i < opt.nr_tags; i++) {
		const char *eq = strchr(opt.tags[i], '=');
		char key[32];

		snprintf(key, sizeof(key), "%.*s", (int)(eq - opt.tags[i]), opt.tags[i]);
		add_field(key, "%s", eq + 1);
	}
}

static const char *rw_name(void)
{
	if (opt.rand)
		return opt.write ? "randwrite" : "randread";
	return opt.write ? "write" : "read";
}

static int report_verify(void)
{
	uint64_t verified = 0, mismatches = 0;
	unsigned int i;

	for (i = 0; i < opt.threads; i++) {
		verified += workers[i].verified;
		mismatches += workers[i].mismatches;
	}
	add_tags();
	add_field("buffer_kind", "%s", kind_names[opt.kind]);
	add_field("passthru", "%d", opt.passthru);
	add_field("rw", "%s", opt.rand ? "randwrite+read" : "write+read");
	add_field("bs", "%u", opt.bs);
	add_field("qd", "%u", opt.qd);
	add_field("threads", "%u", opt.threads);
	add_field("written_ios", "%" PRIu64, opt.ios);
	add_field("verified_blocks", "%" PRIu64, verified);
	add_field("mismatches", "%" PRIu64, mismatches);
	add_field("seed", "%#" PRIx64, opt.seed);
	add_field("result", "%s", failed || mismatches ? "FAIL" : "ok");
	if (!opt.quiet) {
		printf(PROG ": verify %s on %s, %s, bs %u, qd %u, %u thread%s, seed %#" PRIx64 "\n",
		       kind_names[opt.kind], opt.dev, opt.rand ? "random" : "sequential",
		       opt.bs, opt.qd, opt.threads, opt.threads == 1 ? "" : "s", opt.seed);
		printf("  wrote %" PRIu64 " blocks, read back %" PRIu64 " distinct blocks: %s\n",
		       opt.ios, verified,
		       failed ? "I/O FAILED" : mismatches ? "MISMATCH" : "all match");
		if (mismatches)
			printf("  %" PRIu64 " blocks differ\n", mismatches);
	}
	print_machine_readable();
	return failed || mismatches ? 1 : 0;
}

static int report_bench(const struct snapshot *a, const struct snapshot *b,
			uint64_t end_ns)
{
	uint64_t done = 0, lat_sum = 0, lat_max = 0;
	static uint64_t hist[HIST_BUCKETS];
	double secs, iops, mbps, proc_us, user_us, sys_us, sys_cpu_us = 0, util = 0;
	double p50, p99, p999, avg;
	long hz = sysconf(_SC_CLK_TCK);
	unsigned int i, j;

	for (i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];

		done += w->done;
		lat_sum += w->lat_sum;
		if (w->lat_max > lat_max)
			lat_max = w->lat_max;
		for (j = 0; j < HIST_BUCKETS; j++)
			hist[j] += w->hist[j];
	}
	secs = (end_ns - a->ns) / 1e9;
	iops = done / secs;
	mbps = iops * opt.bs / 1e6;
	avg = done ? lat_sum / 1e3 / done : 0;
	p50 = hist_percentile(hist, done, 50) / 1e3;
	p99 = hist_percentile(hist, done, 99) / 1e3;
	p999 = hist_percentile(hist, done, 99.9) / 1e3;
	user_us = done ? (double)(b->proc_user_us - a->proc_user_us) / done : 0;
	sys_us = done ? (double)(b->proc_sys_us - a->proc_sys_us) / done : 0;
	proc_us = user_us + sys_us;
	if (done && hz > 0)
		sys_cpu_us = (b->sys_busy - a->sys_busy) * 1e6 / hz / done;
	if (b->sys_total > a->sys_total)
		util = 100.0 * (b->sys_busy - a->sys_busy) / (b->sys_total - a->sys_total);

	add_tags();
	add_field("buffer_kind", "%s", kind_names[opt.kind]);
	add_field("passthru", "%d", opt.passthru);
	add_field("rw", "%s", rw_name());
	add_field("bs", "%u", opt.bs);
	add_field("qd", "%u", opt.qd);
	add_field("submit_batch", "%u", opt.sbatch);
	add_field("complete_batch", "%u", opt.cbatch);
	add_field("threads", "%u", opt.threads);
	add_field("ios", "%" PRIu64, done);
	add_field("seconds", "%.3f", secs);
	add_field("iops", "%.0f", iops);
	add_field("mbps", "%.2f", mbps);
	add_field("lat_avg_us", "%.1f", avg);
	add_field("lat_p50_us", "%.1f", p50);
	add_field("lat_p99_us", "%.1f", p99);
	add_field("lat_p999_us", "%.1f", p999);
	add_field("lat_max_us", "%.1f", lat_max / 1e3);
	add_field("cpu_us_per_io", "%.2f", proc_us);
	add_field("cpu_user_us_per_io", "%.2f", user_us);
	add_field("cpu_sys_us_per_io", "%.2f", sys_us);
	add_field("guest_cpu_us_per_io", "%.2f", sys_cpu_us);
	add_field("guest_cpu_util_pct", "%.1f", util);

	if (!opt.quiet) {
		printf(PROG ": %s %s on %s, bs %u, qd %u, batch submit %u complete %u, %u thread%s, %s files\n",
		       kind_names[opt.kind], rw_name(), opt.dev, opt.bs, opt.qd,
		       opt.sbatch, opt.cbatch, opt.threads, opt.threads == 1 ? "" : "s",
		       opt.fixed_files ? "registered" : "unregistered");
		printf("  %" PRIu64 " I/Os in %.2f s (after %.2f s warm-up): %.0f IOPS, %.2f MB/s\n",
		       done, secs, opt.ramp, iops, mbps);
		printf("  latency us: avg %.1f  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
		       avg, p50, p99, p999, lat_max / 1e3);
		printf("  CPU per I/O: process %.2f us (user %.2f, sys %.2f); machine %.2f us (%.1f%% of all CPUs busy)\n",
		       proc_us, user_us, sys_us, sys_cpu_us, util);
	}
	print_machine_readable();
	return failed || !done ? 1 : 0;
}

static void sleep_until(uint64_t deadline)
{
	while (!atomic_load(&failed)) {
		uint64_t now = now_ns(), step;
		struct timespec ts;

		if (now >= deadline)
			break;
		step = deadline - now;
		if (step > 50000000)
			step = 50000000;
		ts.tv_sec = step / 1000000000;
		ts.tv_nsec = step % 1000000000;
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv)
{
	struct snapshot start, end;
	uint64_t dev_size, region_blocks, end_ns = 0;
	unsigned int lbs, i;
	int ret;

	parse_options(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);

	dev_size = device_size(opt.dev, &lbs);
	if (opt.bs % lbs)
		die_usage("--bs %u is not a multiple of the logical block size %u of %s",
			  opt.bs, lbs, opt.dev);
	if (opt.offset % lbs)
		die_usage("--offset is not a multiple of the logical block size %u", lbs);
	opt.lba_shift = __builtin_ctz(lbs);
	if (opt.offset >= dev_size)
		die_usage("--offset %" PRIu64 " is beyond the end of %s (%" PRIu64 " bytes)",
			  opt.offset, opt.dev, dev_size);
	if (!opt.size)
		opt.size = dev_size - opt.offset;
	if (opt.size > dev_size - opt.offset)
		die_usage("--offset + --size go beyond the end of %s (%" PRIu64 " bytes)",
			  opt.dev, dev_size);
	region_blocks = opt.size / opt.bs;
	if (!region_blocks)
		die_usage("the region (%" PRIu64 " bytes) holds no block of %u bytes",
			  opt.size, opt.bs);

	workers = calloc(opt.threads, sizeof(*workers));
	if (!workers)
		die("out of memory");
	for (i = 0; i < opt.threads; i++) {
		workers[i].id = i;
		setup_worker(&workers[i], region_blocks);
	}

	atomic_store(&phase, opt.ramp > 0 ? PH_RAMP : PH_RUN);
	take_snapshot(&start);
	if (opt.ramp <= 0)
		mark_window(true);
	for (i = 0; i < opt.threads; i++) {
		ret = pthread_create(&workers[i].tid, NULL, worker_fn, &workers[i]);
		if (ret)
			die("pthread_create: %s", strerror(ret));
	}
	if (opt.ramp > 0) {
		sleep_until(start.ns + (uint64_t)(opt.ramp * 1e9));
		take_snapshot(&start);
		mark_window(true);
		atomic_store(&phase, PH_RUN);
	}
	if (opt.runtime > 0) {
		sleep_until(start.ns + (uint64_t)(opt.runtime * 1e9));
		mark_window(false);
		take_snapshot(&end);
		end_ns = end.ns;
		atomic_store(&phase, PH_STOP);
	}
	for (i = 0; i < opt.threads; i++)
		pthread_join(workers[i].tid, NULL);
	if (!opt.runtime) {
		/* --ios: the window closes when the last thread has its count */
		mark_window(false);
		take_snapshot(&end);
		for (i = 0; i < opt.threads; i++)
			if (workers[i].end_ns > end_ns)
				end_ns = workers[i].end_ns;
	}

	ret = opt.verify ? report_verify() : report_bench(&start, &end, end_ns);
	for (i = 0; i < opt.threads; i++)
		teardown_worker(&workers[i]);
	free(workers);
	return ret;
}
