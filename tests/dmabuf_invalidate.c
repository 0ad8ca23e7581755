// SPDX-License-Identifier: GPL-2.0
/*
 * Invalidation of registered dma-bufs: the series' test exporter migrates,
 * revokes and fences a buffer while io_uring moves data between it and the
 * emulated NVMe namespace.  Every completed I/O is verified, every failure
 * must carry a documented errno, and the poison the exporter leaves in the
 * memory it moved away from must be intact: no DMA after invalidation.
 *
 * dmabufrw_storm_seconds=N (kernel command line, or environment) sets the
 * length of each migration storm (default 45 s), and
 * dmabufrw_devmem_storm_seconds=N that of the device-memory one (default:
 * the others'); `make soak` runs the storm alone for longer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <linux/fs.h>
#include <linux/nvme_ioctl.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "stack.h"
#include "dmabufrw.h"

#define MiB		(1024UL * 1024)
#define SLOT		8192UL		/* one in-flight I/O per slot */
#define QD		64
#define BUF_SIZE	(2 * QD * SLOT)	/* reader slots, then writer slots */
#define READ_BASE	(0 * MiB)	/* prefilled with READ_SEED */
#define READ_SPAN	(16 * MiB)
#define WRITE_BASE	(64 * MiB)	/* QD disjoint regions, one per slot */
#define WRITE_SPAN	(16 * MiB)
#define READ_SEED	0x5eed0001ULL
#define POISON_WORD	(0x0101010101010101ULL * DMABUF_TEST_POISON)
#define MAX_ERRNO	134

static int storm_seconds(const char *exporter)
{
	const char *s = getenv("dmabufrw_storm_seconds");
	const char *d = getenv("dmabufrw_devmem_storm_seconds");

	if (!strcmp(exporter, "devmem") && d && atoi(d) > 0)
		return atoi(d);
	return s && atoi(s) > 0 ? atoi(s) : 45;
}

/* Write READ_SEED's pattern over the area the readers read. */
static int prefill_read_area(int fd)
{
	void *buf;
	int ret = 0;

	if (posix_memalign(&buf, 4096, MiB))
		return -ENOMEM;
	for (uint64_t off = READ_BASE; off < READ_BASE + READ_SPAN; off += MiB) {
		pattern_fill(buf, MiB, READ_SEED, off);
		if (pwrite(fd, buf, MiB, off) != (ssize_t)MiB) {
			ret = -EIO;
			break;
		}
	}
	free(buf);
	return ret;
}

/* Does a failed check show the exporter's poison, i.e. stale DMA? */
static int has_poison(const void *buf, size_t len)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] == POISON_WORD)
			return 1;
	return 0;
}

/*
 * One thread (or child process) doing verified I/O at QD on its own ring,
 * on its own registration of the dma-buf: a reader READ_FIXEDs random
 * blocks of the prefilled area into its slots, a writer WRITE_FIXEDs a new
 * pattern from its slots into the slot's disk region.
 */
/* IORING_REGISTER_CLONE_BUFFERS, newer than Debian 12's liburing */
#define REGISTER_CLONE_BUFFERS	30
struct clone_buffers {
	uint32_t src_fd, flags, src_off, dst_off, nr, pad[3];
};

static int clone_buffers(struct io_uring *dst, struct io_uring *src)
{
	struct clone_buffers arg = { .src_fd = src->ring_fd };
	int ret = syscall(__NR_io_uring_register, dst->ring_fd,
			  REGISTER_CLONE_BUFFERS, &arg, 1);

	return ret < 0 ? -errno : ret;
}

struct storm_io {
	int ctl, dbuf, fd, write;
	const int *allowed;		/* errnos a failed I/O may carry, 0-ended */
	volatile int *stop;
	unsigned int seed;
	unsigned int ring_flags;	/* io_uring_queue_init() flags */
	unsigned int migrate_every;	/* migrate the buffer itself every N I/Os */
	/* READV/WRITEV_FIXED: each I/O's two halves swapped in its slot */
	int vectored;
	/*
	 * NVMe passthrough Reads and Writes through @fd, the namespace's
	 * generic device (nsid, lba_shift), on a ring of big SQEs and CQEs;
	 * @check_fd, its block device, verifies the writes.
	 */
	int passthru, check_fd;
	unsigned int nsid, lba_shift;
	/* clone this ring's buffer table instead of registering @dbuf */
	struct io_uring *clone_from;
	volatile int ready;		/* set once the ring has its buffer */
	/* results */
	int setup_error, migrate_error;
	unsigned long done, failed, bad_errno, data_errors, poison_hits;
	unsigned long migrations, migrate_failed;
	unsigned long by_errno[MAX_ERRNO + 1];
};

struct io_slot {
	uint64_t off, seed;
	unsigned int len;
	struct iovec iov[2];	/* a vectored I/O's ranges of the slot */
};

/*
 * Copy @len bytes between @kbuf (in file order) and the dma-buf at
 * @slot_off, where a vectored storm I/O keeps them with the halves swapped.
 */
static int storm_texp_rw(struct storm_io *s, int write, uint64_t slot_off,
			 void *kbuf, unsigned int len)
{
	unsigned int half = len / 2;

	if (!s->vectored)
		return texp_rw(s->ctl, s->dbuf, write, slot_off, kbuf, len);
	return texp_rw(s->ctl, s->dbuf, write, slot_off + half, kbuf, half) ?:
	       texp_rw(s->ctl, s->dbuf, write, slot_off, kbuf + half, half);
}

static int errno_allowed(const int *allowed, int err)
{
	for (; allowed && *allowed; allowed++)
		if (*allowed == err)
			return 1;
	return 0;
}

static void storm_submit(struct storm_io *s, struct io_uring *ring,
			 struct io_slot *sl, unsigned int i);

static void storm_prep(struct storm_io *s, struct io_uring *ring, void *kbuf,
		       struct io_slot *sl, unsigned int i, uint64_t *counter)
{
	uint64_t slot_off = (s->write ? QD + i : i) * SLOT;
	sl->len = rand_r(&s->seed) & 1 ? 8192 : 4096;
	if (s->write) {
		uint64_t region = WRITE_SPAN / QD;

		sl->off = WRITE_BASE + i * region +
			  (rand_r(&s->seed) % ((region - sl->len) / 4096 + 1)) * 4096;
		sl->seed = (uint64_t)s->seed << 32 | ++*counter;
		pattern_fill(kbuf, sl->len, sl->seed, sl->off);
	} else {
		sl->off = READ_BASE +
			  (rand_r(&s->seed) % ((READ_SPAN - sl->len) / 4096 + 1)) * 4096;
		memset(kbuf, 0, sl->len);	/* no stale match from a previous read */
	}
	if (storm_texp_rw(s, 1, slot_off, kbuf, sl->len))
		s->setup_error = -EIO;
	storm_submit(s, ring, sl, i);
}

/* Queue the I/O of slot @i, prepared by storm_prep(). */
static void storm_submit(struct storm_io *s, struct io_uring *ring,
			 struct io_slot *sl, unsigned int i)
{
	uint64_t slot_off = (s->write ? QD + i : i) * SLOT;
	struct io_uring_sqe *sqe;

	sqe = io_uring_get_sqe(ring);
	if (s->passthru) {
		if (s->write)
			dmabufrw_prep_nvme_write_dmabuf(sqe, s->fd, s->nsid, 0,
				slot_off, sl->len, sl->off >> s->lba_shift,
				s->lba_shift);
		else
			dmabufrw_prep_nvme_read_dmabuf(sqe, s->fd, s->nsid, 0,
				slot_off, sl->len, sl->off >> s->lba_shift,
				s->lba_shift);
	} else if (s->vectored) {
		dmabufrw_dmabuf_iovec(&sl->iov[0], slot_off + sl->len / 2,
				      sl->len / 2);
		dmabufrw_dmabuf_iovec(&sl->iov[1], slot_off, sl->len / 2);
		if (s->write)
			dmabufrw_prep_writev_dmabuf(sqe, s->fd, 0, sl->iov, 2,
						    sl->off);
		else
			dmabufrw_prep_readv_dmabuf(sqe, s->fd, 0, sl->iov, 2,
						   sl->off);
	} else if (s->write)
		dmabufrw_prep_write_dmabuf(sqe, s->fd, 0, slot_off, sl->len,
					   sl->off);
	else
		dmabufrw_prep_read_dmabuf(sqe, s->fd, 0, slot_off, sl->len,
					  sl->off);
	sqe->user_data = i;
}

static void storm_check(struct storm_io *s, void *kbuf, struct io_slot *sl,
			unsigned int i)
{
	uint64_t slot_off = (s->write ? QD + i : i) * SLOT;
	uint64_t seed = s->write ? sl->seed : READ_SEED;

	if (s->write) {
		if (pread(s->check_fd ?: s->fd, kbuf, sl->len, sl->off) !=
		    sl->len) {
			s->data_errors++;
			return;
		}
	} else if (storm_texp_rw(s, 0, slot_off, kbuf, sl->len)) {
		s->data_errors++;
		return;
	}
	if (pattern_check(kbuf, sl->len, seed, sl->off) >= 0) {
		s->data_errors++;
		s->poison_hits += has_poison(kbuf, sl->len);
	}
}

static void *storm_io_thread(void *arg)
{
	struct storm_io *s = arg;
	struct io_slot slots[QD];
	unsigned int free_slots[QD], nfree = QD, inflight = 0, i;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	uint64_t counter = 0;
	void *kbuf;
	int ret;

	if (posix_memalign(&kbuf, 4096, SLOT)) {
		s->setup_error = -ENOMEM;
		return NULL;
	}
	ret = io_uring_queue_init(2 * QD, &ring, s->ring_flags |
				  (s->passthru ? IORING_SETUP_SQE128 |
				   IORING_SETUP_CQE32 : 0));
	if (!ret && s->clone_from)
		ret = clone_buffers(&ring, s->clone_from);
	else if (!ret)
		ret = io_uring_register_buffers_sparse(&ring, 1);
	if (!ret && !s->clone_from)
		ret = dmabufrw_register_dmabuf(&ring, 0, s->dbuf, s->fd);
	if (ret) {
		s->setup_error = ret;
		s->ready = 1;
		free(kbuf);
		return NULL;
	}
	s->ready = 1;
	for (i = 0; i < QD; i++)
		free_slots[i] = i;

	while (!*s->stop || inflight) {
		while (!*s->stop && nfree) {
			i = free_slots[--nfree];
			storm_prep(s, &ring, kbuf, &slots[i], i, &counter);
			inflight++;
		}
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR) {
			s->setup_error = ret;
			break;
		}
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			struct io_slot *sl;

			i = cqe->user_data;
			sl = &slots[i];
			if (cqe->res == (s->passthru ? 0 : (int)sl->len)) {
				s->done++;
				storm_check(s, kbuf, sl, i);
			} else if (cqe->res < 0) {
				s->failed++;
				if (-cqe->res <= MAX_ERRNO)
					s->by_errno[-cqe->res]++;
				if (!errno_allowed(s->allowed, -cqe->res))
					s->bad_errno++;
			} else {
				s->data_errors++;	/* short transfer */
			}
			io_uring_cqe_seen(&ring, cqe);
			inflight--;
			free_slots[nfree++] = i;
			/*
			 * From the thread that reaps, with the rest of its
			 * I/O in flight: on a polled ring, nobody else polls
			 * for it while the exporter waits for it.
			 */
			if (s->migrate_every && inflight &&
			    !((s->done + s->failed) % s->migrate_every)) {
				ret = texp_op(s->ctl, DMABUF_TEST_IOC_MIGRATE,
					      s->dbuf, 0);
				if (ret) {
					s->migrate_failed++;
					s->migrate_error = ret;
				} else {
					s->migrations++;
				}
			}
		}
	}
	io_uring_queue_exit(&ring);
	free(kbuf);
	return NULL;
}

/* Migrates the buffer every min_us..max_us until stopped. */
struct migrator {
	int ctl, dbuf;
	unsigned int min_us, max_us, seed;
	volatile int *stop;
	unsigned long done, failed;
	int last_error;
};

static void *migrator_thread(void *arg)
{
	struct migrator *m = arg;

	while (!*m->stop) {
		int ret = texp_op(m->ctl, DMABUF_TEST_IOC_MIGRATE, m->dbuf, 0);

		if (ret) {
			m->failed++;
			m->last_error = ret;
		} else {
			m->done++;
		}
		usleep(m->min_us + rand_r(&m->seed) % (m->max_us - m->min_us + 1));
	}
	return NULL;
}

/*
 * Wait until every registration of the buffer is gone (ring teardown is
 * asynchronous) and check that the exporter saw balanced calls.
 */
static int wait_balanced(int ctl, int dbuf, struct dmabuf_test_stats *st)
{
	for (int i = 0; i < 600; i++) {
		if (texp_stats(ctl, dbuf, st))
			return -1;
		if (st->attaches == st->detaches && st->maps == st->unmaps &&
		    !st->live_maps)
			return 0;
		usleep(50000);
	}
	return -1;
}

/*
 * Wait until someone has begun to wait for one of the buffer's fences since
 * the exporter counted @before such waits: the importer's wait, seen by the
 * exporter, not inferred from a delay.  0, or -1 after 20 s.
 */
static int wait_fence_wait(int ctl, int dbuf, uint64_t before)
{
	struct dmabuf_test_stats st;

	for (int i = 0; i < 2000; i++) {
		if (texp_stats(ctl, dbuf, &st))
			return -1;
		if (st.fence_waits > before)
			return 0;
		usleep(10000);
	}
	return -1;
}

static void log_stats(struct __test_metadata *_metadata, const char *what,
		      const struct dmabuf_test_stats *st)
{
	TH_LOG("%s: attaches %llu/%llu detached, maps %llu/%llu unmapped, invalidations %llu, migrations %llu, revokes %llu, refused maps %llu, mapped after invalidate %llu, retired %llu (%llu checked), stale bytes %llu",
	       what, st->attaches, st->detaches, st->maps, st->unmaps,
	       st->invalidations, st->migrations, st->revokes, st->map_refused,
	       st->mapped_after_invalidate, st->retired, st->retired_checked,
	       st->stale_bytes);
}

/*
 * The final checks of every test: all registrations gone and balanced, no
 * mapping survived an invalidation, and the poison in every retired backing
 * is intact.
 */
static void check_exporter_clean(struct __test_metadata *_metadata, int ctl,
				 int dbuf)
{
	struct dmabuf_test_stats st;

	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dbuf, 0));
	EXPECT_EQ(0, wait_balanced(ctl, dbuf, &st));
	log_stats(_metadata, "exporter", &st);
	EXPECT_EQ(st.attaches, st.detaches);
	EXPECT_EQ(st.maps, st.unmaps);
	EXPECT_EQ(0, st.live_maps);
	EXPECT_EQ(0, st.mapped_after_invalidate);
	EXPECT_EQ(st.retired, st.retired_checked);
	EXPECT_EQ(0, st.stale_bytes);
	EXPECT_EQ(0, st.pins);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * How long the importers held up the exporter's invalidations (the
 * exporter times each dma_buf_invalidate_mappings() call): the median, the
 * 99th percentile and the maximum, as "# storm: key=value" words.
 */
static void print_invalidation_latency(int ctl, int dbuf)
{
	static uint64_t ns[DMABUF_TEST_MAX_LATENCIES];
	int n = texp_latencies(ctl, dbuf, ns, DMABUF_TEST_MAX_LATENCIES);

	if (n <= 0) {
		printf("# storm: invalidations_timed=0\n");
		return;
	}
	qsort(ns, n, sizeof(ns[0]), cmp_u64);
	printf("# storm: invalidations_timed=%d invalidation_us_p50=%.0f invalidation_us_p99=%.0f invalidation_us_max=%.0f\n",
	       n, ns[n / 2] / 1e3, ns[(n * 99) / 100] / 1e3, ns[n - 1] / 1e3);
}

static void check_storm_io(struct __test_metadata *_metadata, const char *what,
			   const struct storm_io *s)
{
	char errs[256] = "";
	size_t n = 0;

	for (int e = 1; e <= MAX_ERRNO; e++)
		if (s->by_errno[e] && n < sizeof(errs))
			n += snprintf(errs + n, sizeof(errs) - n, " %s:%lu",
				      strerrorname_np(e) ?: "?", s->by_errno[e]);
	TH_LOG("%s: %lu done and verified, %lu failed (%s ), %lu data errors, %lu with poison",
	       what, s->done, s->failed, n ? errs : " none", s->data_errors,
	       s->poison_hits);
	EXPECT_EQ(0, s->setup_error);
	EXPECT_EQ(0, s->bad_errno);
	EXPECT_EQ(0, s->data_errors);
	EXPECT_EQ(0, s->poison_hits);
}

FIXTURE(texp) {
	struct io_uring ring;
	int fd, ctl, dbuf;
	void *kbuf;
};

FIXTURE_VARIANT(texp) {
	unsigned int flags;
};

/* Dynamic exporter: has pin/unpin, takes any importer. */
FIXTURE_VARIANT_ADD(texp, dynamic) {
	.flags = 0,
};

/* Revoke-only exporter in the model of vfio-pci. */
FIXTURE_VARIANT_ADD(texp, revoke_only) {
	.flags = DMABUF_TEST_F_REVOKE_ONLY,
};

FIXTURE_SETUP(texp)
{
	REQUIRE_DMABUF_IO();
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	self->dbuf = texp_create(self->ctl, BUF_SIZE, variant->flags);
	ASSERT_LE(0, self->dbuf);
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, io_uring_queue_init(64, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 8));
	ASSERT_EQ(0, posix_memalign(&self->kbuf, 4096, 1 * MiB));
	ASSERT_EQ(0, prefill_read_area(self->fd));
}

FIXTURE_TEARDOWN(texp)
{
	free(self->kbuf);
	io_uring_queue_exit(&self->ring);
	close(self->fd);
	close(self->dbuf);
	close(self->ctl);
}

/*
 * Migrate an idle registered buffer: the mapping is dropped at once, the
 * next I/O maps the new memory, reads land in it and writes come from it.
 */
TEST_F(texp, idle_migration_then_io_uses_new_memory)
{
	const uint64_t len = 256 * 1024;
	struct dmabuf_test_stats st;
	void *p = self->kbuf;

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	pattern_fill(p, len, 0xa1, 100 * MiB);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 1, 0, p, len));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					      len, 100 * MiB));
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(1, st.maps);
	EXPECT_EQ(1, st.live_maps);

	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, 0));
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(1, st.invalidations);
	EXPECT_EQ(1, st.unmaps);
	EXPECT_EQ(0, st.live_maps);
	EXPECT_EQ(0, st.mapped_after_invalidate);

	/* A read lands in the new memory... */
	pattern_fill(p, len, 0xb2, 101 * MiB);
	ASSERT_EQ((ssize_t)len, pwrite(self->fd, p, len, 101 * MiB));
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					      512 * 1024, len, 101 * MiB));
	memset(p, 0, len);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 512 * 1024, p, len));
	EXPECT_EQ(-1, pattern_check(p, len, 0xb2, 101 * MiB));

	/* ...and a write takes the moved contents from it, not poison. */
	ASSERT_EQ((int)len, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					      len, 102 * MiB));
	ASSERT_EQ((ssize_t)len, pread(self->fd, p, len, 102 * MiB));
	EXPECT_EQ(-1, pattern_check(p, len, 0xa1, 100 * MiB));

	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(2, st.maps);
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Reader and writer rings at QD 64, each with its own registration of
 * @dbuf for @fd, while the exporter migrates the buffer every 1-5 ms for
 * the storm's seconds: every I/O completes and is verified, no retired
 * memory was touched, and the I/O had to remap.
 */
/* What the storm's I/O is */
enum storm_how {
	STORM_RW,		/* READ_FIXED, WRITE_FIXED */
	STORM_VECTORED,		/* READV_FIXED, WRITEV_FIXED of two ranges */
	STORM_PASSTHRU,		/* NVMe passthrough Read and Write commands */
	STORM_PASSTHRU_POLLED,	/* the same on IOPOLL rings */
};

/*
 * The contexts debugfs' dma_buf/io lists for the dma-buf of inode @ino,
 * the stacked ones aside: how many, and of their counters the smallest
 * number of invalidations and the sum of map errors.  -1 if unreadable.
 */
struct member_ctxs {
	int n;
	unsigned long min_invalidations, map_errors;
};

static int read_member_ctxs(unsigned long ino, struct member_ctxs *c)
{
	unsigned long inval, errs;
	char line[1024], key[32];
	const char *p;
	FILE *f;

	memset(c, 0, sizeof(*c));
	c->min_invalidations = ~0UL;
	f = fopen("/sys/kernel/debug/dma_buf/io", "r");
	if (!f)
		return -1;
	snprintf(key, sizeof(key), " ino=%lu ", ino);
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, key) || strstr(line, "state=stacked"))
			continue;
		p = strstr(line, " invalidations=");
		if (!p || sscanf(p, " invalidations=%lu map_errors=%lu",
				 &inval, &errs) != 2)
			continue;
		c->n++;
		if (inval < c->min_invalidations)
			c->min_invalidations = inval;
		c->map_errors += errs;
	}
	fclose(f);
	return 0;
}

/*
 * The storm: a reader and a writer (each its own ring and registration of
 * @dbuf for @fd) against a migrator, for the exporter's storm time.  With
 * @members, the target is a stacked device whose registration maps the
 * buffer on that many member devices: just before the storm stops, each
 * member's context must have been invalidated (and so remapped) on its
 * own with no map error, and once the registrations are gone, so must be
 * every member's context.
 */
static void migration_storm(struct __test_metadata *_metadata, int ctl,
			    int dbuf, int fd, const char *exporter,
			    enum storm_how how, int members)
{
	struct member_ctxs mc = { 0 };
	const int vectored = how == STORM_VECTORED;
	const int passthru = how >= STORM_PASSTHRU;
	const int none[] = { 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = ctl, .dbuf = dbuf, .fd = fd,
			       .allowed = none, .stop = &stop, .seed = 1,
			       .vectored = vectored };
	struct storm_io wr = rd;
	struct migrator m = { .ctl = ctl, .dbuf = dbuf, .min_us = 1000,
			      .max_us = 5000, .seed = 3, .stop = &stop };
	pthread_t trd, twr, tm;
	int seconds = storm_seconds(exporter) / (passthru ? 4 : vectored ? 2 : 1);
	struct dmabuf_test_stats st;
	int ng = -1;
	double t0;

	if (passthru) {
		ng = nvme_ng_open(O_RDWR, fd, &rd.nsid, &rd.lba_shift);
		ASSERT_LE(0, ng) TH_LOG("%s: %s", nvme_ng_dev(), strerror(-ng));
		rd.passthru = 1;
		if (how == STORM_PASSTHRU_POLLED)
			rd.ring_flags = IORING_SETUP_IOPOLL;
		rd.fd = ng;
		rd.check_fd = fd;
		wr = rd;
	}
	wr.write = 1;
	wr.seed = 2;
	t0 = now_sec();
	ASSERT_EQ(0, pthread_create(&trd, NULL, storm_io_thread, &rd));
	ASSERT_EQ(0, pthread_create(&twr, NULL, storm_io_thread, &wr));
	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	while (now_sec() - t0 < seconds)
		usleep(100000);
	if (members)
		EXPECT_EQ(0, read_member_ctxs(file_ino(dbuf), &mc));
	stop = 1;
	pthread_join(tm, NULL);
	pthread_join(trd, NULL);
	pthread_join(twr, NULL);

	check_storm_io(_metadata, "reader", &rd);
	check_storm_io(_metadata, "writer", &wr);
	EXPECT_EQ(0, m.failed) TH_LOG("migrate: %s", strerror(-m.last_error));
	EXPECT_LT(0, m.done);
	EXPECT_LT(0, rd.done);
	EXPECT_LT(0, wr.done);
	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dbuf, 0));
	ASSERT_EQ(0, wait_balanced(ctl, dbuf, &st));
	/* The storm must have made the I/O remap, or it proved nothing. */
	EXPECT_LT(2, st.maps);
	printf("# storm: exporter=%s%s seconds=%.0f reads=%lu writes=%lu failed=%lu migrations=%llu invalidations=%llu maps=%llu unmaps=%llu retired_checked=%llu stale_bytes=%llu stale_data=%lu data_errors=%lu\n",
	       exporter, vectored ? " vectored" : !passthru ? "" :
	       how == STORM_PASSTHRU_POLLED ? " passthru polled" : " passthru",
	       now_sec() - t0, rd.done, wr.done, rd.failed + wr.failed,
	       st.migrations,
	       st.invalidations, st.maps, st.unmaps, st.retired_checked,
	       st.stale_bytes, rd.poison_hits + wr.poison_hits,
	       rd.data_errors + wr.data_errors);
	for (int e = 1; e <= MAX_ERRNO; e++)
		if (rd.by_errno[e] + wr.by_errno[e])
			printf("# storm: errno %s=%lu\n", strerrorname_np(e) ?: "?",
			       rd.by_errno[e] + wr.by_errno[e]);
	print_invalidation_latency(ctl, dbuf);
	if (members) {
		/* the reader's and the writer's registrations share them */
		printf("# storm: member contexts=%d least invalidated=%lu times, map errors=%lu\n",
		       mc.n, mc.min_invalidations, mc.map_errors);
		EXPECT_EQ(members, mc.n);
		EXPECT_LT(0, mc.min_invalidations);
		EXPECT_EQ(0, mc.map_errors);
		EXPECT_EQ(0, read_member_ctxs(file_ino(dbuf), &mc));
		EXPECT_EQ(0, mc.n) TH_LOG("member contexts left");
	}
	fflush(stdout);
	check_exporter_clean(_metadata, ctl, dbuf);
	if (ng >= 0)
		close(ng);
}

/*
 * The storm on the raw namespace with a buffer of pages, which every
 * migration moves to new pages.
 */
TEST_F_TIMEOUT(texp, migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd,
			variant->flags ? "revoke-only" : "dynamic", STORM_RW, 0);
}

/*
 * The storm with READV_FIXED/WRITEV_FIXED, each I/O two ranges of the
 * dma-buf out of order (one bio each): an invalidation between the bios of
 * one I/O must not lose data or let a bio reach memory the exporter moved
 * away from.  Half the storm's time.
 */
TEST_F_TIMEOUT(texp, vectored_migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd,
			variant->flags ? "revoke-only" : "dynamic",
			STORM_VECTORED, 0);
}

/*
 * The storm with NVMe passthrough Reads and Writes through the namespace's
 * generic device, with the buffer registered for it: each command's data
 * pointer comes from the mapping of the moment, a command whose mapping
 * was invalidated before the controller got it is issued again by
 * io_uring (no CQE may say -EAGAIN: the storm allows no errno), and none
 * may lose data or reach memory the exporter moved away from.  On a plain
 * ring and on an IOPOLL ring (the poll queues, which the invalidation
 * polls itself), a quarter of the storm's time each.
 */
TEST_F_TIMEOUT(texp, passthru_migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd,
			variant->flags ? "revoke-only" : "dynamic",
			STORM_PASSTHRU, 0);
}

TEST_F_TIMEOUT(texp, polled_passthru_migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	REQUIRE_POLL_QUEUES();
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd,
			variant->flags ? "revoke-only" : "dynamic",
			STORM_PASSTHRU_POLLED, 0);
}

/*
 * The storm through md arrays over the test VM's member controllers
 * (tests/stack.h): RAID0 over the four members in 64 KiB chunks, so that
 * the I/O is split across members, each with its own mapping that every
 * migration invalidates; and RAID1 over two, whose writes go to both
 * mirrors and whose reads to either, so that one mirror's mapping can be
 * invalidated while the other's part of the write is done: the whole write
 * is issued again, and none may fail.  Its mirrors are fail-fast (md
 * fails such a leg on its first failed read), and no mirror may be failed
 * for an invalidation.  The exporter's counters cover the
 * attachments of all members: each is balanced, no member's mapping
 * outlived an invalidation, and the poison of every retired backing is
 * intact.
 */
FIXTURE(texp_stack) {
	struct md_array md;
	int fd, ctl, dbuf;
};

FIXTURE_VARIANT(texp_stack) {
	int level;
	int members;
};

FIXTURE_VARIANT_ADD(texp_stack, md_raid0) {
	.level = 0,
	.members = STACK_MEMBERS,
};

FIXTURE_VARIANT_ADD(texp_stack, md_raid1) {
	.level = 1,
	.members = 2,
};

FIXTURE_SETUP(texp_stack)
{
	int i;

	self->md.fd = self->fd = self->dbuf = self->ctl = -1;
	for (i = 0; i < variant->members; i++) {
		if (!member_devt(i))
			SKIP(return, "no member controller %d (scripts/run-vm test mode)", i);
	}
	REQUIRE_DMABUF_IO();
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl);
}

FIXTURE_TEARDOWN(texp_stack)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->dbuf >= 0)
		close(self->dbuf);
	if (self->ctl >= 0)
		close(self->ctl);
	EXPECT_EQ(0, md_stop(&self->md));
}

/*
 * Assemble the array and create the buffer: in the test, so that the
 * teardown unwinds what a failure leaves (not after a failed setup).
 */
static void texp_stack_build(struct __test_metadata *_metadata,
			     FIXTURE_DATA(texp_stack) *self,
			     const FIXTURE_VARIANT(texp_stack) *variant)
{
	dev_t member[STACK_MEMBERS];
	int i;

	for (i = 0; i < variant->members; i++)
		member[i] = member_devt(i);
	ASSERT_EQ(0, md_create(&self->md, variant->level, member,
			       variant->members, 64 * 1024));
	/* fail-fast mirrors: md retries a failed read elsewhere and fails the leg */
	for (i = 0; variant->level == 1 && i < variant->members; i++) {
		char name[32], path[128];

		member_name(i, name, sizeof(name));
		snprintf(path, sizeof(path), "/sys/block/%s/md/dev-%s/state",
			 strrchr(self->md.path, '/') + 1, name);
		ASSERT_EQ(0, write_text(path, "failfast")) TH_LOG("%s", path);
	}
	self->fd = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, prefill_read_area(self->fd));
	self->dbuf = texp_create(self->ctl, BUF_SIZE, 0);
	ASSERT_LE(0, self->dbuf);
}

TEST_F_TIMEOUT(texp_stack, migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	char path[128], text[32];

	texp_stack_build(_metadata, self, variant);
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd,
			variant->level ? "md_raid1" : "md_raid0", STORM_RW,
			variant->members);
	/* an invalidated mapping is no device error: no leg failed for it */
	snprintf(path, sizeof(path), "/sys/block/%s/md/degraded",
		 strrchr(self->md.path, '/') + 1);
	if (variant->level == 1) {
		ASSERT_LT(0, read_text(path, text, sizeof(text)));
		EXPECT_EQ(0, atoi(text)) TH_LOG("a mirror was failed");
	}
}

/*
 * A revoke under large dma-buf writes to md RAID1 over members 2 and 3.
 * Each 4 MiB write reaches each mirror as several requests, and those
 * that had not reached their device when the exporter revoked the buffer
 * fail, so a mirror may hold a write another lacks, or part of it, and the
 * buffer cannot be mapped to write it again.  RAID1 then copies one
 * mirror's copy to the others, as a resync would: no mirror is failed, and
 * the mirrors agree, so that what a read returns does not depend on the
 * mirror it goes to.
 */
#define MIRROR_SPAN	(16 * MiB)
#define MIRROR_IO	(4 * MiB)

FIXTURE(texp_mirror) {
	struct md_array md;
	int fd, ctl, dbuf, leg[2];
};

FIXTURE_SETUP(texp_mirror)
{
	int i;

	self->md.fd = self->fd = self->dbuf = self->ctl = -1;
	self->leg[0] = self->leg[1] = -1;
	for (i = 0; i < 2; i++) {
		if (!member_devt(2 + i))
			SKIP(return, "no member controller %d (scripts/run-vm test mode)", 2 + i);
	}
	REQUIRE_DMABUF_IO();
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl);
}

FIXTURE_TEARDOWN(texp_mirror)
{
	int i;

	if (self->fd >= 0)
		close(self->fd);
	if (self->dbuf >= 0)
		close(self->dbuf);
	if (self->ctl >= 0)
		close(self->ctl);
	for (i = 0; i < 2; i++)
		if (self->leg[i] >= 0)
			close(self->leg[i]);
	EXPECT_EQ(0, md_stop(&self->md));
}

/*
 * Assemble the array and fill the buffer: in the test, so that the
 * teardown unwinds what a failure leaves (not after a failed setup).
 */
static void texp_mirror_build(struct __test_metadata *_metadata,
			      FIXTURE_DATA(texp_mirror) *self)
{
	char name[32], path[64];
	dev_t member[2];
	void *p;
	int i;

	for (i = 0; i < 2; i++)
		member[i] = member_devt(2 + i);
	for (i = 0; i < 2; i++) {
		member_name(2 + i, name, sizeof(name));
		snprintf(path, sizeof(path), "/dev/%s", name);
		self->leg[i] = open(path, O_RDONLY | O_DIRECT);
		ASSERT_LE(0, self->leg[i]) TH_LOG("%s: %s", path, strerror(errno));
	}
	ASSERT_EQ(0, md_create(&self->md, 1, member, 2, 0));
	self->fd = open(self->md.path, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	self->dbuf = texp_create(self->ctl, MIRROR_SPAN, 0);
	ASSERT_LE(0, self->dbuf);
	p = malloc(MIRROR_SPAN);
	ASSERT_NE(NULL, p);
	pattern_fill(p, MIRROR_SPAN, 71, 0);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 1, 0, p, MIRROR_SPAN));
	free(p);
}

/* md's state of the array's mirror on member 2 + @i, or "gone". */
static void mirror_state(const struct md_array *md, int i, char *text,
			 size_t size)
{
	char name[32], path[128];

	member_name(2 + i, name, sizeof(name));
	snprintf(path, sizeof(path), "/sys/block/%s/md/dev-%s/state",
		 strrchr(md->path, '/') + 1, name);
	if (read_text(path, text, size) < 0)
		snprintf(text, size, "gone");
}

TEST_F_TIMEOUT(texp_mirror, mirrors_agree_after_a_revoke_under_writes, 600)
{
	char state[2][128];
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned long submitted = 0, done = 0, ok = 0, failed = 0;
	unsigned char *a, *b;
	bool revoked = false;
	int i, faulty = 0;
	long diff;

	texp_mirror_build(_metadata, self);
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, self->dbuf, self->fd));

	/* four 4 MiB writes in flight; the revoke after the first twelve */
	while (done < submitted || !revoked) {
		while (!revoked && submitted - done < 4) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			uint64_t off = (submitted % 4) * MIRROR_IO;

			io_uring_prep_write_fixed(sqe, self->fd, (void *)off,
						  MIRROR_IO, off, 0);
			ASSERT_EQ(1, io_uring_submit(&ring));
			submitted++;
		}
		ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
		if (cqe->res == MIRROR_IO)
			ok++;
		else
			failed++;
		io_uring_cqe_seen(&ring, cqe);
		done++;
		if (!revoked && done == 12) {
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_REVOKE,
					     self->dbuf, 0));
			revoked = true;
		}
	}
	io_uring_queue_exit(&ring);
	EXPECT_LE(12, ok);

	for (i = 0; i < 2; i++) {
		mirror_state(&self->md, i, state[i], sizeof(state[i]));
		faulty += !!strstr(state[i], "faulty");
	}
	TH_LOG("%lu writes done, %lu failed after the revoke; mirrors: %s, %s",
	       ok, failed, state[0], state[1]);
	EXPECT_EQ(0, faulty);
	a = aligned_alloc(4096, MIRROR_SPAN);
	b = aligned_alloc(4096, MIRROR_SPAN);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(MIRROR_SPAN, pread(self->leg[0], a, MIRROR_SPAN, 0));
	ASSERT_EQ(MIRROR_SPAN, pread(self->leg[1], b, MIRROR_SPAN, 0));
	for (diff = 0; diff < (long)MIRROR_SPAN && a[diff] == b[diff]; diff++)
		;
	EXPECT_EQ((long)MIRROR_SPAN, diff)
		TH_LOG("the mirrors differ from byte %ld", diff);
	free(a);
	free(b);
}

/*
 * The storm against polled rings (IORING_SETUP_IOPOLL), whose I/O goes to
 * the NVMe poll queues and completes only when someone polls: a reader and
 * a writer ring at QD 64 on the raw namespace, each verified as above, and
 * invalidations that must not wait for the rings to reap.  With
 * @self_driven the reader's own thread migrates the buffer every few
 * completions, with the rest of its I/O in flight, and is the only thread
 * that polls: nobody polls for the reader's I/O while the exporter waits
 * for it.  Otherwise a migrator thread migrates every 1-5 ms.  A drain that waited for the application would hang
 * until the driver's I/O time-out (30 s) reaped the requests: every
 * invalidation must be done within seconds.
 */
static void polled_migration_storm(struct __test_metadata *_metadata, int ctl,
				   int dbuf, int fd, bool self_driven)
{
	const int none[] = { 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = ctl, .dbuf = dbuf, .fd = fd,
			       .allowed = none, .stop = &stop, .seed = 11,
			       .ring_flags = IORING_SETUP_IOPOLL };
	struct storm_io wr = rd;
	struct migrator m = { .ctl = ctl, .dbuf = dbuf, .min_us = 1000,
			      .max_us = 5000, .seed = 13, .stop = &stop };
	/* each variant takes half the storm: both fit the others' time */
	int seconds = (storm_seconds("polled") + 1) / 2;
	static uint64_t ns[DMABUF_TEST_MAX_LATENCIES];
	pthread_t trd, twr, tm;
	struct dmabuf_test_stats st;
	uint64_t max_ns = 0;
	double t0;
	int n;

	wr.write = 1;
	wr.seed = 12;
	/*
	 * The writer's ring would poll the same poll queue and complete the
	 * reader's requests for it: with the reader driving, it takes
	 * interrupts, so that the reader's thread is the only one to poll.
	 */
	if (self_driven) {
		rd.migrate_every = 16;
		wr.ring_flags = 0;
	}
	t0 = now_sec();
	ASSERT_EQ(0, pthread_create(&trd, NULL, storm_io_thread, &rd));
	ASSERT_EQ(0, pthread_create(&twr, NULL, storm_io_thread, &wr));
	if (!self_driven)
		ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	while (now_sec() - t0 < seconds)
		usleep(100000);
	stop = 1;
	if (!self_driven)
		pthread_join(tm, NULL);
	pthread_join(trd, NULL);
	pthread_join(twr, NULL);

	check_storm_io(_metadata, "polled reader", &rd);
	check_storm_io(_metadata, "polled writer", &wr);
	if (self_driven) {
		EXPECT_EQ(0, rd.migrate_failed)
			TH_LOG("migrate: %s", strerror(-rd.migrate_error));
		EXPECT_LT(0, rd.migrations);
	} else {
		EXPECT_EQ(0, m.failed) TH_LOG("migrate: %s", strerror(-m.last_error));
		EXPECT_LT(0, m.done);
	}
	EXPECT_LT(0, rd.done);
	EXPECT_LT(0, wr.done);
	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dbuf, 0));
	ASSERT_EQ(0, wait_balanced(ctl, dbuf, &st));
	EXPECT_LT(2, st.maps);
	n = texp_latencies(ctl, dbuf, ns, DMABUF_TEST_MAX_LATENCIES);
	ASSERT_LT(0, n);
	for (int i = 0; i < n; i++)
		max_ns = ns[i] > max_ns ? ns[i] : max_ns;
	EXPECT_GT(5000000000ULL, max_ns)
		TH_LOG("an invalidation took %.1f s: it waited for the ring to poll",
		       max_ns / 1e9);
	printf("# storm: exporter=polled driver=%s seconds=%.0f reads=%lu writes=%lu failed=%lu migrations=%llu invalidations=%llu maps=%llu stale_data=%lu data_errors=%lu\n",
	       self_driven ? "polling-thread" : "other-thread", now_sec() - t0,
	       rd.done, wr.done, rd.failed + wr.failed, st.migrations,
	       st.invalidations, st.maps, rd.poison_hits + wr.poison_hits,
	       rd.data_errors + wr.data_errors);
	print_invalidation_latency(ctl, dbuf);
	fflush(stdout);
	check_exporter_clean(_metadata, ctl, dbuf);
}

/* The dynamic exporter's buffer, the raw namespace: the polled storms'. */
FIXTURE(texp_polled) {
	int ctl, dbuf, fd;
};

FIXTURE_SETUP(texp_polled)
{
	self->ctl = self->dbuf = self->fd = -1;
	REQUIRE_DMABUF_IO();
	REQUIRE_POLL_QUEUES();
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	self->dbuf = texp_create(self->ctl, BUF_SIZE, 0);
	ASSERT_LE(0, self->dbuf);
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, prefill_read_area(self->fd));
}

FIXTURE_TEARDOWN(texp_polled)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->dbuf >= 0)
		close(self->dbuf);
	if (self->ctl >= 0)
		close(self->ctl);
}

TEST_F_TIMEOUT(texp_polled, storm_driven_from_the_polling_thread_never_hangs, 3600)
{
	polled_migration_storm(_metadata, self->ctl, self->dbuf, self->fd, true);
}

TEST_F_TIMEOUT(texp_polled, storm_driven_from_another_thread_never_hangs, 3600)
{
	polled_migration_storm(_metadata, self->ctl, self->dbuf, self->fd, false);
}

/*
 * A thread-per-ring program registers once: reader and writer rings on two
 * threads clone the dma-buf slot of a third ring (IORING_REGISTER_CLONE_
 * BUFFERS) and run at QD 64 while the exporter migrates the buffer every
 * 1-5 ms.  One attachment serves the three rings, every I/O is verified,
 * no retired memory was touched, and the registration lasts until the last
 * ring lets it go: the ring it was registered in exits while the clones
 * run (@source_exits_first), or after both clones are gone, and is still
 * served until then.
 */
static void cloned_migration_storm(struct __test_metadata *_metadata, int ctl,
				   int dbuf, int fd, bool source_exits_first)
{
	const int none[] = { 0 };
	volatile int stop = 0;
	struct io_uring src;
	struct storm_io rd = { .ctl = ctl, .dbuf = dbuf, .fd = fd,
			       .allowed = none, .stop = &stop, .seed = 21,
			       .clone_from = &src };
	struct storm_io wr = rd;
	struct migrator m = { .ctl = ctl, .dbuf = dbuf, .min_us = 1000,
			      .max_us = 5000, .seed = 23, .stop = &stop };
	/* each variant takes a quarter of the storm */
	int seconds = (storm_seconds("cloned") + 3) / 4;
	struct dmabuf_test_stats st;
	pthread_t trd, twr, tm;
	double t0;

	wr.write = 1;
	wr.seed = 22;
	ASSERT_EQ(0, io_uring_queue_init(8, &src, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&src, 1));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&src, 0, dbuf, fd));
	t0 = now_sec();
	ASSERT_EQ(0, pthread_create(&trd, NULL, storm_io_thread, &rd));
	ASSERT_EQ(0, pthread_create(&twr, NULL, storm_io_thread, &wr));
	while (!rd.ready || !wr.ready)
		usleep(1000);
	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	if (source_exits_first)
		io_uring_queue_exit(&src);
	while (now_sec() - t0 < seconds)
		usleep(100000);
	ASSERT_EQ(0, texp_stats(ctl, dbuf, &st));
	EXPECT_EQ(1, st.attaches) TH_LOG("the clones attached on their own");
	stop = 1;
	pthread_join(tm, NULL);
	pthread_join(trd, NULL);
	pthread_join(twr, NULL);

	check_storm_io(_metadata, "cloned reader", &rd);
	check_storm_io(_metadata, "cloned writer", &wr);
	EXPECT_EQ(0, m.failed) TH_LOG("migrate: %s", strerror(-m.last_error));
	EXPECT_LT(0, m.done);
	EXPECT_LT(0, rd.done);
	EXPECT_LT(0, wr.done);
	if (!source_exits_first) {
		/* the clones are gone: the source ring still has its slot */
		void *buf;

		ASSERT_EQ(0, posix_memalign(&buf, 4096, 8192));
		EXPECT_EQ(8192, dmabufrw_rw_fixed(&src, false, fd, 0, 0, 8192,
						  READ_BASE + 8192));
		ASSERT_EQ(0, texp_rw(ctl, dbuf, 0, 0, buf, 8192));
		EXPECT_EQ(-1, pattern_check(buf, 8192, READ_SEED,
					    READ_BASE + 8192));
		free(buf);
		ASSERT_EQ(0, texp_stats(ctl, dbuf, &st));
		EXPECT_EQ(0, st.detaches);
		io_uring_queue_exit(&src);
	}
	ASSERT_EQ(0, texp_op(ctl, DMABUF_TEST_IOC_CHECK_RETIRED, dbuf, 0));
	ASSERT_EQ(0, wait_balanced(ctl, dbuf, &st));
	EXPECT_EQ(1, st.attaches);
	EXPECT_LT(2, st.maps);
	printf("# storm: exporter=cloned source=%s seconds=%.0f reads=%lu writes=%lu failed=%lu migrations=%llu invalidations=%llu maps=%llu stale_data=%lu data_errors=%lu\n",
	       source_exits_first ? "exits-first" : "exits-last",
	       now_sec() - t0, rd.done, wr.done, rd.failed + wr.failed,
	       st.migrations, st.invalidations, st.maps,
	       rd.poison_hits + wr.poison_hits, rd.data_errors + wr.data_errors);
	fflush(stdout);
	check_exporter_clean(_metadata, ctl, dbuf);
}

TEST_F_TIMEOUT(texp, cloned_rings_on_two_threads_storm_source_ring_exits_first, 3600)
{
	cloned_migration_storm(_metadata, self->ctl, self->dbuf, self->fd, true);
}

TEST_F_TIMEOUT(texp, cloned_rings_on_two_threads_storm_source_ring_exits_last, 3600)
{
	cloned_migration_storm(_metadata, self->ctl, self->dbuf, self->fd, false);
}

/*
 * The storm on device memory (scripts/run-vm --devmem): the buffer lives
 * in the ivshmem BAR, and the migrations evict it to system memory and
 * bring it back, in turn, under the I/O, as a GPU driver moves VRAM.  On
 * the root bus, where the PCI core refuses peer-to-peer DMA, the
 * registration is refused with EOPNOTSUPP and there is nothing to move.
 */
FIXTURE(texp_devmem) {
	int ctl, dbuf, fd;
	bool p2p;
};

FIXTURE_SETUP(texp_devmem)
{
	self->ctl = self->dbuf = self->fd = -1;
	REQUIRE_DMABUF_IO();
	REQUIRE_DEVMEM(self->p2p);
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	self->dbuf = texp_create(self->ctl, BUF_SIZE, DMABUF_TEST_F_DEVMEM);
	ASSERT_LE(0, self->dbuf) TH_LOG("create: %s", strerror(-self->dbuf));
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, prefill_read_area(self->fd));
}

FIXTURE_TEARDOWN(texp_devmem)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->dbuf >= 0)
		close(self->dbuf);
	if (self->ctl >= 0)
		close(self->ctl);
}

TEST_F_TIMEOUT(texp_devmem, eviction_storm_between_device_and_system_memory_loses_no_data, 3600)
{
	struct io_uring ring;
	int ret;

	if (!self->p2p) {
		ASSERT_EQ(0, io_uring_queue_init(4, &ring, 0));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
		ret = dmabufrw_register_dmabuf(&ring, 0, self->dbuf, self->fd);
		EXPECT_EQ(-EOPNOTSUPP, ret);
		io_uring_queue_exit(&ring);
		return;
	}
	migration_storm(_metadata, self->ctl, self->dbuf, self->fd, "devmem",
			STORM_RW, 0);
}

/*
 * The storm against files: a test-exporter buffer per file system, each
 * registered with a file of it (ext4 on a partition, XFS on a namespace),
 * a reader and a writer ring at QD 64 on each file while the exporter
 * migrates both buffers every 1-5 ms.  As for the raw device: every I/O
 * completes and is verified (reads against the prefilled file, writes by
 * a direct pread of the file), and no retired memory was touched.
 */
FIXTURE(texp_files) {
	int ctl, dbuf[2], fd[2];
};

static const char *const storm_file[2] = {
	EXT4_MNT "/storm", XFS_MNT "/storm",
};

FIXTURE_SETUP(texp_files)
{
	int ret;

	REQUIRE_DMABUF_IO();
	self->dbuf[0] = self->dbuf[1] = self->fd[0] = self->fd[1] = -1;
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	ret = mount_ns(3, 1, "ext4", EXT4_MNT, NULL);
	ASSERT_EQ(0, ret) TH_LOG("mount ext4: %s", strerror(-ret));
	ret = mount_ns(4, 0, "xfs", XFS_MNT, NULL);
	ASSERT_EQ(0, ret) TH_LOG("mount xfs: %s", strerror(-ret));
	for (int f = 0; f < 2; f++) {
		self->dbuf[f] = texp_create(self->ctl, BUF_SIZE, 0);
		ASSERT_LE(0, self->dbuf[f]);
		self->fd[f] = open(storm_file[f], O_RDWR | O_CREAT | O_TRUNC |
				   O_DIRECT, 0600);
		ASSERT_LE(0, self->fd[f]);
		ASSERT_EQ(0, prefill_read_area(self->fd[f]));
	}
}

FIXTURE_TEARDOWN(texp_files)
{
	for (int f = 0; f < 2; f++) {
		close(self->fd[f]);
		unlink(storm_file[f]);
		close(self->dbuf[f]);
	}
	close(self->ctl);
	EXPECT_EQ(0, umount_busy(EXT4_MNT));
	EXPECT_EQ(0, umount_busy(XFS_MNT));
}

TEST_F_TIMEOUT(texp_files, migration_storm_on_ext4_and_xfs_files_loses_no_data, 3600)
{
	static const char *const name[2] = { "ext4", "xfs" };
	const int none[] = { 0 };
	volatile int stop = 0;
	struct storm_io rd[2], wr[2];
	struct migrator m[2];
	pthread_t trd[2], twr[2], tm[2];
	int seconds = storm_seconds("files");
	struct dmabuf_test_stats st;
	double t0 = now_sec();

	for (int f = 0; f < 2; f++) {
		rd[f] = (struct storm_io){ .ctl = self->ctl, .dbuf = self->dbuf[f],
					   .fd = self->fd[f], .allowed = none,
					   .stop = &stop, .seed = 11 + f };
		wr[f] = rd[f];
		wr[f].write = 1;
		wr[f].seed = 21 + f;
		m[f] = (struct migrator){ .ctl = self->ctl, .dbuf = self->dbuf[f],
					  .min_us = 1000, .max_us = 5000,
					  .seed = 31 + f, .stop = &stop };
		ASSERT_EQ(0, pthread_create(&trd[f], NULL, storm_io_thread, &rd[f]));
		ASSERT_EQ(0, pthread_create(&twr[f], NULL, storm_io_thread, &wr[f]));
		ASSERT_EQ(0, pthread_create(&tm[f], NULL, migrator_thread, &m[f]));
	}
	while (now_sec() - t0 < seconds)
		usleep(100000);
	stop = 1;
	for (int f = 0; f < 2; f++) {
		pthread_join(tm[f], NULL);
		pthread_join(trd[f], NULL);
		pthread_join(twr[f], NULL);
	}

	for (int f = 0; f < 2; f++) {
		check_storm_io(_metadata, name[f], &rd[f]);
		check_storm_io(_metadata, name[f], &wr[f]);
		EXPECT_EQ(0, m[f].failed) TH_LOG("migrate: %s",
						 strerror(-m[f].last_error));
		EXPECT_LT(0, m[f].done);
		EXPECT_LT(0, rd[f].done);
		EXPECT_LT(0, wr[f].done);
		ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_CHECK_RETIRED,
				     self->dbuf[f], 0));
		ASSERT_EQ(0, wait_balanced(self->ctl, self->dbuf[f], &st));
		/* the storm must have made the I/O remap, or it proved nothing */
		EXPECT_LT(2, st.maps);
		printf("# storm: file_system=%s seconds=%.0f reads=%lu writes=%lu failed=%lu migrations=%llu maps=%llu unmaps=%llu retired_checked=%llu stale_bytes=%llu stale_data=%lu data_errors=%lu\n",
		       name[f], now_sec() - t0, rd[f].done, wr[f].done,
		       rd[f].failed + wr[f].failed, st.migrations, st.maps,
		       st.unmaps, st.retired_checked, st.stale_bytes,
		       rd[f].poison_hits + wr[f].poison_hits,
		       rd[f].data_errors + wr[f].data_errors);
		check_exporter_clean(_metadata, self->ctl, self->dbuf[f]);
	}
	fflush(stdout);
}

/*
 * A revoke while readers and writers keep I/O in flight on an ext4 and an
 * XFS file: the revoke returns within the bound, I/O in flight completes
 * with its data or fails with ENODEV (never a short count or stale data),
 * later I/O through a registration made before the revoke fails with
 * ENODEV and writes nothing, and after a restore that same registration
 * moves the files' data again.
 */
TEST_F_TIMEOUT(texp_files, revoke_under_file_io_is_bounded_and_restore_resumes, 300)
{
	static const char *const name[2] = { "ext4", "xfs" };
	const int enodev[] = { ENODEV, 0 };
	volatile int stop = 0;
	struct storm_io rd[2], wr[2];
	pthread_t trd[2], twr[2];
	struct io_uring ring;
	double took[2];
	void *p, *before;

	/* a registration per file that lives through the revoke */
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
	ASSERT_EQ(0, posix_memalign(&p, 4096, 65536));
	ASSERT_EQ(0, posix_memalign(&before, 4096, 4096));
	for (int f = 0; f < 2; f++) {
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, f, self->dbuf[f],
						      self->fd[f]));
		ASSERT_EQ(4096, dmabufrw_rw_fixed(&ring, false, self->fd[f], f, 0,
						  4096, READ_BASE));
		/* widen the window between invalidation and the next map */
		ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf[f], 2000, 2000));
		rd[f] = (struct storm_io){ .ctl = self->ctl, .dbuf = self->dbuf[f],
					   .fd = self->fd[f], .allowed = enodev,
					   .stop = &stop, .seed = 41 + f };
		wr[f] = rd[f];
		wr[f].write = 1;
		wr[f].seed = 51 + f;
		ASSERT_EQ(0, pthread_create(&trd[f], NULL, storm_io_thread, &rd[f]));
		ASSERT_EQ(0, pthread_create(&twr[f], NULL, storm_io_thread, &wr[f]));
	}
	usleep(1000000);
	for (int f = 0; f < 2; f++)
		ASSERT_EQ(0, texp_op_timed(self->ctl, DMABUF_TEST_IOC_REVOKE,
					   self->dbuf[f], &took[f]));
	usleep(500000);
	stop = 1;
	for (int f = 0; f < 2; f++) {
		pthread_join(trd[f], NULL);
		pthread_join(twr[f], NULL);
	}

	for (int f = 0; f < 2; f++) {
		TH_LOG("%s: revoke took %.3f s", name[f], took[f]);
		check_storm_io(_metadata, name[f], &rd[f]);
		check_storm_io(_metadata, name[f], &wr[f]);
		EXPECT_LT(0, rd[f].done);
		EXPECT_LT(0, wr[f].done);
		EXPECT_LT(0, rd[f].by_errno[ENODEV] + wr[f].by_errno[ENODEV]);
		EXPECT_GT(30.0, took[f]);

		/* revoked: I/O fails, and a write leaves the file alone */
		ASSERT_EQ(4096, pread(self->fd[f], before, 4096, WRITE_BASE));
		EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&ring, false, self->fd[f], f,
						     0, 4096, READ_BASE));
		EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&ring, true, self->fd[f], f,
						     0, 4096, WRITE_BASE));
		ASSERT_EQ(4096, pread(self->fd[f], p, 4096, WRITE_BASE));
		EXPECT_EQ(0, memcmp(before, p, 4096));
		/* restored: the registration from before moves data again */
		ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE,
				     self->dbuf[f], 0));
		ASSERT_EQ(65536, dmabufrw_rw_fixed(&ring, false, self->fd[f], f,
						   8192, 65536, READ_BASE + MiB));
		ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf[f], 0, 8192, p, 65536));
		EXPECT_EQ(-1, pattern_check(p, 65536, READ_SEED, READ_BASE + MiB));
		ASSERT_EQ(0, dmabufrw_unregister_slot(&ring, f));
		check_exporter_clean(_metadata, self->ctl, self->dbuf[f]);
	}
	free(before);
	free(p);
	io_uring_queue_exit(&ring);
}

/*
 * A revoked buffer: new I/O fails with ENODEV while it is revoked and works
 * again after the exporter restores it.
 */
TEST_F(texp, revoked_buffer_fails_io_until_restored)
{
	struct dmabuf_test_stats st;
	void *p = self->kbuf;

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096,
					  READ_BASE));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_REVOKE, self->dbuf, 0));
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(0, st.live_maps);

	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, READ_BASE));
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					     4096, WRITE_BASE));
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_LE(2, st.map_refused);

	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, self->dbuf, 0));
	ASSERT_EQ(65536, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 8192,
					   65536, READ_BASE + MiB));
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 8192, p, 65536));
	EXPECT_EQ(-1, pattern_check(p, 65536, READ_SEED, READ_BASE + MiB));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Revoke while a reader keeps 64 I/Os in flight: the revoke returns once
 * the in-flight I/O is done (bounded), I/O in flight completes with its
 * data or fails with ENODEV, I/O after it fails with ENODEV, and a restore
 * brings the buffer back.
 */
TEST_F_TIMEOUT(texp, revoke_with_io_in_flight_is_bounded, 300)
{
	const int enodev[] = { ENODEV, 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = self->ctl, .dbuf = self->dbuf, .fd = self->fd,
			       .allowed = enodev, .stop = &stop, .seed = 7 };
	unsigned long before;
	pthread_t thr;
	double took;

	/* Widen the window between invalidation and the next mapping. */
	ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 2000, 2000));
	ASSERT_EQ(0, pthread_create(&thr, NULL, storm_io_thread, &rd));
	usleep(1000000);
	before = rd.done;
	ASSERT_EQ(0, texp_op_timed(self->ctl, DMABUF_TEST_IOC_REVOKE, self->dbuf, &took));
	usleep(500000);
	stop = 1;
	pthread_join(thr, NULL);
	TH_LOG("revoke took %.3f s with %lu reads done before it", took, before);
	check_storm_io(_metadata, "reader", &rd);
	EXPECT_LT(0, before);
	EXPECT_LT(0, rd.by_errno[ENODEV]);
	EXPECT_GT(30.0, took);

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, READ_BASE));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, self->dbuf, 0));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096,
					  READ_BASE));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Implicit synchronisation with the exporter's fences: a device write of
 * the buffer (READ_FIXED) waits for every fence but bookkeeping ones, a
 * device read (WRITE_FIXED) only for kernel and write fences; the first
 * I/O after a migration also waits for kernel fences to map the buffer.
 */
TEST_F_TIMEOUT(texp, io_waits_for_the_fences_it_must_follow, 120)
{
	static const struct {
		unsigned int usage;
		const char *name;
		int read_waits, write_waits;
	} cases[] = {
		{ DMABUF_TEST_FENCE_KERNEL, "kernel", 1, 1 },
		{ DMABUF_TEST_FENCE_WRITE, "write", 1, 1 },
		{ DMABUF_TEST_FENCE_READ, "read", 1, 0 },
		{ DMABUF_TEST_FENCE_BOOKKEEP, "bookkeep", 0, 0 },
	};
	struct __kernel_timespec ts = { .tv_sec = 20 };
	struct dmabuf_test_stats st;
	struct io_uring_cqe *cqe;
	uint64_t before;

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	for (unsigned int c = 0; c < 4; c++) {
		for (int write = 0; write < 2; write++) {
			int waits = write ? cases[c].write_waits : cases[c].read_waits;
			struct io_uring_sqe *sqe;

			/* Unmapped, so the kernel fence also gates the mapping. */
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE,
					     self->dbuf, 0));
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_ADD,
					     self->dbuf, cases[c].usage));
			sqe = io_uring_get_sqe(&self->ring);
			if (write)
				io_uring_prep_write_fixed(sqe, self->fd, NULL, 4096,
							  WRITE_BASE, 0);
			else
				io_uring_prep_read_fixed(sqe, self->fd, NULL, 4096,
							 READ_BASE, 0);
			ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
			before = st.fence_waits;
			ASSERT_EQ(1, io_uring_submit(&self->ring));
			if (waits) {
				EXPECT_EQ(0, wait_fence_wait(self->ctl, self->dbuf,
							     before))
					TH_LOG("%s of the buffer did not wait for a %s fence",
					       write ? "device read" : "device write",
					       cases[c].name);
				EXPECT_EQ(-EAGAIN, io_uring_peek_cqe(&self->ring, &cqe))
					TH_LOG("%s %s: done before the fence signalled",
					       cases[c].name, write ? "write" : "read");
				ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
						     self->dbuf, 0));
			}
			ASSERT_EQ(0, io_uring_wait_cqe_timeout(&self->ring, &cqe, &ts))
				TH_LOG("%s %s: no completion", cases[c].name,
				       write ? "write" : "read");
			EXPECT_EQ(4096, cqe->res);
			io_uring_cqe_seen(&self->ring, cqe);
			if (!waits) {
				ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
				EXPECT_EQ(before, st.fence_waits)
					TH_LOG("%s of the buffer waited for a %s fence",
					       write ? "device read" : "device write",
					       cases[c].name);
			}
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
					     self->dbuf, 0));
		}
	}
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * A buffer that never had a fence has no fence list, and the per-I/O fence
 * test answers without walking it.  The first fence ever added, to a buffer
 * that is mapped (so nothing else gates the I/O), must still hold back a
 * device write of the buffer.
 */
TEST_F_TIMEOUT(texp, first_fence_of_a_mapped_buffer_is_waited_for, 60)
{
	struct __kernel_timespec ts = { .tv_sec = 20 };
	struct dmabuf_test_stats st;
	struct io_uring_cqe *cqe;
	int pass;

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	for (pass = 0; pass < 2; pass++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

		/* Pass 1 runs unfenced and maps; pass 2 after the first fence. */
		if (pass)
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_ADD,
					     self->dbuf, DMABUF_TEST_FENCE_WRITE));
		io_uring_prep_read_fixed(sqe, self->fd, NULL, 4096, READ_BASE, 0);
		ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
		ASSERT_EQ(1, io_uring_submit(&self->ring));
		if (pass) {
			EXPECT_EQ(0, wait_fence_wait(self->ctl, self->dbuf,
						     st.fence_waits))
				TH_LOG("the read did not wait for the buffer's first fence");
			EXPECT_EQ(-EAGAIN, io_uring_peek_cqe(&self->ring, &cqe))
				TH_LOG("the device wrote the buffer before its first fence signalled");
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
					     self->dbuf, 0));
		}
		ASSERT_EQ(0, io_uring_wait_cqe_timeout(&self->ring, &cqe, &ts));
		EXPECT_EQ(4096, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/* A reader in a child process, which exits or is killed with I/O in flight. */
static void child_reader(int ctl, int dbuf, int fd, unsigned int seed,
			 int exit_after_us)
{
	static const int none[] = { 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = ctl, .dbuf = dbuf, .fd = fd, .stop = &stop,
			       .seed = seed, .allowed = none };
	pthread_t thr;

	if (pthread_create(&thr, NULL, storm_io_thread, &rd))
		_exit(2);
	if (exit_after_us < 0)
		pause();	/* until killed */
	usleep(exit_after_us);
	/*
	 * Exit with I/O in flight, but only after some has completed: on a
	 * busy host (TCG beside another VM) the first I/O took longer than
	 * the delay.  Up to 30 s more.
	 */
	for (int i = 0; i < 3000; i++) {
		if (__atomic_load_n(&rd.done, __ATOMIC_RELAXED) ||
		    __atomic_load_n(&rd.setup_error, __ATOMIC_RELAXED))
			break;
		usleep(10000);
	}
	/* migrations are invisible to I/O: no failure is allowed */
	if (rd.setup_error || rd.data_errors || rd.poison_hits || rd.bad_errno)
		_exit(1);
	_exit(rd.done ? 0 : 3);	/* ring and rings' I/O torn down by exit */
}

static void race_children(struct __test_metadata *_metadata, int ctl, int dbuf,
			  int fd, int kill_them)
{
	volatile int stop = 0;
	struct migrator m = { .ctl = ctl, .dbuf = dbuf, .min_us = 1000,
			      .max_us = 3000, .seed = 11, .stop = &stop };
	unsigned int seed = 21;
	pthread_t tm;

	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	for (int i = 0; i < 4; i++) {
		int delay = 400000 + rand_r(&seed) % 600000, status;
		pid_t pid = fork();

		ASSERT_LE(0, pid);
		if (!pid)
			child_reader(ctl, dbuf, fd, seed + i, kill_them ? -1 : delay);
		if (kill_them) {
			usleep(delay);
			kill(pid, SIGKILL);
		}
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		if (kill_them) {
			EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		} else {
			EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
				TH_LOG("child status %#x", status);
		}
	}
	stop = 1;
	pthread_join(tm, NULL);
	TH_LOG("%lu migrations, %lu failed", m.done, m.failed);
	EXPECT_EQ(0, m.failed);
	EXPECT_LT(0, m.done);
}

/* Processes exit with their rings' I/O in flight while the buffer migrates. */
TEST_F_TIMEOUT(texp, migration_races_ring_exit, 300)
{
	race_children(_metadata, self->ctl, self->dbuf, self->fd, 0);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/* Processes are killed with I/O in flight while the buffer migrates. */
TEST_F_TIMEOUT(texp, migration_races_process_kill, 300)
{
	race_children(_metadata, self->ctl, self->dbuf, self->fd, 1);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * The slot is unregistered right after 32 reads are submitted, while the
 * buffer migrates: the reads complete with their data, the registration
 * goes away after them.
 */
TEST_F_TIMEOUT(texp, migration_races_buffer_unregister, 300)
{
	volatile int stop = 0;
	struct migrator m = { .ctl = self->ctl, .dbuf = self->dbuf, .min_us = 500,
			      .max_us = 2000, .seed = 5, .stop = &stop };
	struct io_uring_cqe *cqe;
	unsigned long done = 0;
	pthread_t tm;

	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	for (int iter = 0; iter < 20; iter++) {
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf,
						      self->fd));
		for (int i = 0; i < 32; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

			io_uring_prep_read_fixed(sqe, self->fd,
						 (void *)(uintptr_t)(i * SLOT), SLOT,
						 READ_BASE + (iter * 32 + i) * SLOT, 0);
			sqe->user_data = i;
		}
		ASSERT_EQ(32, io_uring_submit(&self->ring));
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
		for (int n = 0; n < 32; n++) {
			ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
			EXPECT_EQ((int)SLOT, cqe->res);
			if (cqe->res == (int)SLOT) {
				uint64_t i = cqe->user_data;

				ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, i * SLOT,
						     self->kbuf, SLOT));
				EXPECT_EQ(-1, pattern_check(self->kbuf, SLOT, READ_SEED,
							    READ_BASE + (iter * 32 + i) * SLOT));
				done++;
			}
			io_uring_cqe_seen(&self->ring, cqe);
		}
	}
	stop = 1;
	pthread_join(tm, NULL);
	TH_LOG("%lu reads verified across %lu migrations", done, m.done);
	EXPECT_EQ(0, m.failed);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Controller resets while reader and writer rings run and the buffer
 * migrates: I/O completes with its data or fails with EIO or EAGAIN.
 */
TEST_F_TIMEOUT(texp, migration_races_controller_reset, 300)
{
	const int allowed[] = { EIO, EAGAIN, 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = self->ctl, .dbuf = self->dbuf, .fd = self->fd,
			       .allowed = allowed, .stop = &stop, .seed = 31 };
	struct storm_io wr = rd;
	struct migrator m = { .ctl = self->ctl, .dbuf = self->dbuf, .min_us = 1000,
			      .max_us = 5000, .seed = 33, .stop = &stop };
	pthread_t trd, twr, tm;
	int rfd;

	wr.write = 1;
	wr.seed = 32;
	rfd = open(nvme_path("/sys/block/%s/device/reset_controller"), O_WRONLY);
	ASSERT_LE(0, rfd);
	ASSERT_EQ(0, pthread_create(&trd, NULL, storm_io_thread, &rd));
	ASSERT_EQ(0, pthread_create(&twr, NULL, storm_io_thread, &wr));
	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	for (int i = 0; i < 3; i++) {
		usleep(700000);
		EXPECT_EQ(1, pwrite(rfd, "1", 1, 0));
	}
	usleep(700000);
	stop = 1;
	pthread_join(tm, NULL);
	pthread_join(trd, NULL);
	pthread_join(twr, NULL);
	close(rfd);
	check_storm_io(_metadata, "reader", &rd);
	check_storm_io(_metadata, "writer", &wr);
	EXPECT_EQ(0, m.failed);
	EXPECT_LT(0, rd.done);
	EXPECT_LT(0, wr.done);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Every registration of one dma-buf for one device and direction shares
 * one attachment and one mapping, however many slots and rings hold it:
 * the IOMMU resources registrations take are bounded by the buffers.  A
 * registration for another direction (a read-only target) has its own.
 */
TEST_F(texp, registrations_of_one_buffer_share_one_attachment)
{
	struct dmabuf_test_stats st;
	struct io_uring other;
	int ro, i;

	ASSERT_EQ(0, io_uring_queue_init(8, &other, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&other, 8));
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, i, self->dbuf,
						      self->fd));
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&other, i, self->dbuf,
						      self->fd));
	}
	for (i = 0; i < 8; i++) {
		EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, i,
						  i * 4096, 4096, READ_BASE));
		EXPECT_EQ(4096, dmabufrw_rw_fixed(&other, false, self->fd, i,
						  i * 4096, 4096, READ_BASE));
	}
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(1, st.attaches);
	EXPECT_EQ(1, st.maps);

	ro = open(NVME_DEV, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ro);
	ASSERT_EQ(0, dmabufrw_unregister_slot(&other, 7));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&other, 7, self->dbuf, ro));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&other, false, ro, 7, 0, 4096,
					  READ_BASE));
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(2, st.attaches);
	EXPECT_EQ(2, st.maps);

	/* The shared attachment goes with its last registration only. */
	io_uring_queue_exit(&other);
	close(ro);
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, READ_BASE));
	for (i = 0; i < 8; i++)
		ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, i));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
	ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
	EXPECT_EQ(2, st.detaches);
}

/*
 * Cloning a buffer table with a dma-buf slot into another ring shares the
 * registration: I/O works from both rings through one attachment, and the
 * registration goes when the last ring does, whichever exits first.
 */
TEST_F(texp, cloned_table_shares_the_registration)
{
	struct dmabuf_test_stats st;
	struct io_uring a, b;

	for (int first = 0; first < 2; first++) {
		ASSERT_EQ(0, io_uring_queue_init(8, &a, 0));
		ASSERT_EQ(0, io_uring_queue_init(8, &b, 0));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&a, 2));
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&a, 1, self->dbuf, self->fd));
		ASSERT_EQ(0, clone_buffers(&b, &a));
		EXPECT_EQ(8192, dmabufrw_rw_fixed(&b, false, self->fd, 1, 0, 8192,
						  READ_BASE));
		EXPECT_EQ(8192, dmabufrw_rw_fixed(&a, false, self->fd, 1, 8192,
						  8192, READ_BASE + 8192));
		ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 0, self->kbuf,
				     16384));
		EXPECT_EQ(-1, pattern_check(self->kbuf, 16384, READ_SEED,
					    READ_BASE));
		ASSERT_EQ(0, texp_stats(self->ctl, self->dbuf, &st));
		EXPECT_EQ(first + 1, st.attaches);

		io_uring_queue_exit(first ? &b : &a);
		/* the other ring still holds the registration */
		EXPECT_EQ(4096, dmabufrw_rw_fixed(first ? &a : &b, false,
						  self->fd, 1, 0, 4096,
						  READ_BASE));
		io_uring_queue_exit(first ? &a : &b);
		check_exporter_clean(_metadata, self->ctl, self->dbuf);
	}
}

#define RELEASE_TAG	0x7a6e0000ULL

/* Register @dbuf for @fd in slot @slot of @ring with release tag @tag. */
static int register_tagged(struct io_uring *ring, unsigned int slot, int dbuf,
			   int fd, uint64_t tag)
{
	struct dmabufrw_regbuf_desc d = {
		.type = DMABUFRW_REGBUF_DMABUF,
		.dmabuf_fd = dbuf,
		.target_fd = fd,
	};
	int ret = dmabufrw_update_buffers_desc(ring, slot, &d, &tag, 1);

	return ret == 1 ? 0 : ret < 0 ? ret : -EIO;
}

/*
 * Reap @ring's CQEs for up to @ms (for ever if < 0) until the one with
 * user_data RELEASE_TAG: the other CQEs must be 4 KiB reads (their count
 * goes to *@reads); when the tag comes, the exporter's counters go to
 * *@st.  Returns 1 if the tag came, 0 if not, -1 on an unexpected CQE.
 */
static int wait_release_tag(struct io_uring *ring, int ms, int ctl, int dbuf,
			    unsigned int *reads, struct dmabuf_test_stats *st)
{
	double end = now_sec() + ms / 1000.0;
	struct __kernel_timespec ts = { .tv_nsec = 10 * 1000 * 1000 };
	struct io_uring_cqe *cqe;

	while (ms < 0 || now_sec() < end) {
		int ret = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
		uint64_t ud;

		if (ret == -ETIME || ret == -EINTR)
			continue;
		if (ret)
			return -1;
		ud = cqe->user_data;
		if (ud == RELEASE_TAG) {
			ret = cqe->res ? -1 : 1;
			io_uring_cqe_seen(ring, cqe);
			if (texp_stats(ctl, dbuf, st))
				return -1;
			return ret;
		}
		if (cqe->res != 4096)
			return -1;
		(*reads)++;
		io_uring_cqe_seen(ring, cqe);
	}
	return 0;
}

/*
 * The tag of a dma-buf slot is posted once the kernel has let the
 * registration go: after the I/O that used it, and after the release
 * worker unmapped and detached the buffer (slowed down to 100 ms here) and
 * dropped its references.  On a plain ring, a ring whose task alone posts
 * CQEs (DEFER_TASKRUN) and a polled ring.
 */
TEST_F_TIMEOUT(texp, release_tag_comes_after_the_buffer_is_let_go, 120)
{
	const struct { const char *name; unsigned int flags; } kinds[] = {
		{ "plain", 0 },
		{ "defer-taskrun", IORING_SETUP_SINGLE_ISSUER |
				   IORING_SETUP_DEFER_TASKRUN },
		{ "iopoll", IORING_SETUP_IOPOLL },
	};

	ASSERT_LT(0, nvme_polls()) TH_LOG("the rig boots with nvme.poll_queues");
	for (unsigned int k = 0; k < 3; k++) {
		struct dmabuf_test_stats st;
		struct io_uring ring;
		unsigned int reads = 0;

		ASSERT_EQ(0, io_uring_queue_init(64, &ring, kinds[k].flags));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 2));
		ASSERT_EQ(0, register_tagged(&ring, 0, self->dbuf, self->fd,
					     RELEASE_TAG));
		ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 0, 100000));
		for (int i = 0; i < 16; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

			dmabufrw_prep_read_dmabuf(sqe, self->fd, 0, i * 4096,
						  4096, READ_BASE + i * 4096);
			sqe->user_data = i;
		}
		ASSERT_EQ(16, io_uring_submit(&ring));
		/* the slot goes with all 16 reads in flight */
		ASSERT_EQ(0, dmabufrw_unregister_slot(&ring, 0));
		ASSERT_EQ(1, wait_release_tag(&ring, 10000, self->ctl,
					      self->dbuf, &reads, &st))
			TH_LOG("%s: no release tag", kinds[k].name);
		EXPECT_EQ(16, reads) TH_LOG("%s: the tag came before the I/O",
					    kinds[k].name);
		EXPECT_EQ(1, st.detaches) TH_LOG("%s: the tag came before the detach",
						 kinds[k].name);
		EXPECT_EQ(st.maps, st.unmaps);
		EXPECT_EQ(0, st.live_maps);
		ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 0, 0));
		ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 0, self->kbuf,
				     16 * 4096));
		EXPECT_EQ(-1, pattern_check(self->kbuf, 16 * 4096, READ_SEED,
					    READ_BASE));
		io_uring_queue_exit(&ring);
		check_exporter_clean(_metadata, self->ctl, self->dbuf);
		/* each kind starts from an exporter with no history */
		if (k < 2) {
			close(self->dbuf);
			self->dbuf = texp_create(self->ctl, BUF_SIZE, variant->flags);
			ASSERT_LE(0, self->dbuf);
		}
	}
}

/*
 * A cloned slot holds the registration: the tag of the slot it was made in
 * comes only when the clone's ring is gone too.  A ring closed before the
 * registration goes gets no tag, and its pending tag leaves nothing behind
 * (KASAN watches the worker that would have posted it).
 */
TEST_F_TIMEOUT(texp, release_tag_waits_for_the_clones, 120)
{
	struct dmabuf_test_stats st;
	struct io_uring a, b;
	unsigned int reads = 0;

	ASSERT_EQ(0, io_uring_queue_init(8, &a, 0));
	ASSERT_EQ(0, io_uring_queue_init(8, &b, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&a, 1));
	ASSERT_EQ(0, register_tagged(&a, 0, self->dbuf, self->fd, RELEASE_TAG));
	ASSERT_EQ(0, clone_buffers(&b, &a));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&a, 0));
	EXPECT_EQ(0, wait_release_tag(&a, 500, self->ctl, self->dbuf, &reads,
				      &st)) TH_LOG("the tag came with a clone left");
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&b, false, self->fd, 0, 0, 4096,
					  READ_BASE));
	io_uring_queue_exit(&b);
	ASSERT_EQ(1, wait_release_tag(&a, 10000, self->ctl, self->dbuf, &reads,
				      &st));
	EXPECT_EQ(1, st.detaches);
	io_uring_queue_exit(&a);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);

	/* the ring with the tag closes first: unregistered, or not */
	for (int unreg = 0; unreg < 2; unreg++) {
		ASSERT_EQ(0, io_uring_queue_init(8, &a, 0));
		ASSERT_EQ(0, io_uring_queue_init(8, &b, 0));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&a, 1));
		ASSERT_EQ(0, register_tagged(&a, 0, self->dbuf, self->fd,
					     RELEASE_TAG));
		ASSERT_EQ(0, clone_buffers(&b, &a));
		if (unreg)
			ASSERT_EQ(0, dmabufrw_unregister_slot(&a, 0));
		io_uring_queue_exit(&a);
		/* let a's teardown run before b lets the registration go */
		usleep(200000);
		EXPECT_EQ(4096, dmabufrw_rw_fixed(&b, false, self->fd, 0, 0,
						  4096, READ_BASE));
		io_uring_queue_exit(&b);
		check_exporter_clean(_metadata, self->ctl, self->dbuf);
	}
}

/*
 * Dropping a registration may wait for the reservation lock, an RCU grace
 * period, the device and the IOMMU unmap: it must not run where io_uring
 * frees requests, under the ring's lock, with its completions waiting.
 * The exporter records which task unmapped and detached: a worker, not the
 * task that owns the ring and emptied the slot.  Other I/O on the ring
 * keeps completing meanwhile, and a ring with 64 registrations exits with
 * all of them torn down.
 */
TEST_F_TIMEOUT(texp, registration_teardown_leaves_the_ring_alone, 120)
{
	struct dmabuf_test_stats st;
	struct io_uring ring;
	int bufs[64], ubuf, memfd;
	double t0;

	ubuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, ubuf);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 1, ubuf, self->fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, READ_BASE));
	/* a slow unmap: 100 ms under the exporter's reservation lock */
	ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 0, 100000));
	for (int i = 0; i < 16; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

		io_uring_prep_read_fixed(sqe, self->fd,
					 (void *)(uintptr_t)(i * 4096), 4096,
					 READ_BASE + i * 4096, 0);
		sqe->buf_index = 0;
	}
	ASSERT_EQ(16, io_uring_submit(&self->ring));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	for (int i = 0; i < 16; i++) {
		struct io_uring_cqe *cqe;

		ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
		EXPECT_EQ(4096, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}
	t0 = now_sec();
	for (int i = 0; i < 16; i++)
		EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 1,
						  0, 4096, READ_BASE));
	TH_LOG("16 reads through another slot took %.3f s during the teardown",
	       now_sec() - t0);
	ASSERT_EQ(0, wait_balanced(self->ctl, self->dbuf, &st));
	TH_LOG("unmapped by \"%s\", detached by \"%s\"", st.unmap_comm,
	       st.detach_comm);
	EXPECT_EQ(0, strncmp(st.unmap_comm, "kworker", 7));
	EXPECT_EQ(0, strncmp(st.detach_comm, "kworker", 7));
	ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 0, 0));

	/* 64 registrations of 64 buffers, mapped, then the ring exits. */
	ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 64));
	for (int i = 0; i < 64; i++) {
		bufs[i] = texp_create(self->ctl, 64 * 1024, variant->flags);
		ASSERT_LE(0, bufs[i]);
		ASSERT_EQ(0, texp_delays(self->ctl, bufs[i], 0, 10000));
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, i, bufs[i], self->fd));
		ASSERT_EQ(4096, dmabufrw_rw_fixed(&ring, false, self->fd, i, 0,
						  4096, READ_BASE));
	}
	t0 = now_sec();
	io_uring_queue_exit(&ring);
	for (int i = 0; i < 64; i++) {
		check_exporter_clean(_metadata, self->ctl, bufs[i]);
		close(bufs[i]);
	}
	TH_LOG("64 registrations torn down %.3f s after ring exit",
	       now_sec() - t0);
	close(ubuf);
	close(memfd);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

#define THROTTLE_CG	"/sys/fs/cgroup/dmabufrw-throttle"

/*
 * Put this process in a cgroup whose io.max lets @iops reads and writes a
 * second through to the disk behind @fd.
 */
static int throttle_begin(int fd, unsigned int iops)
{
	char line[96];
	struct stat st;
	int ret;

	mkdir("/sys/fs/cgroup", 0755);
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) &&
	    mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL))
		return -errno;
	ret = write_text("/sys/fs/cgroup/cgroup.subtree_control", "+io");
	if (ret)
		return ret;
	if (mkdir(THROTTLE_CG, 0755) && errno != EEXIST)
		return -errno;
	if (fstat(fd, &st))
		return -errno;
	snprintf(line, sizeof(line), "%u:%u riops=%u wiops=%u",
		 major(st.st_rdev), minor(st.st_rdev), iops, iops);
	ret = write_text(THROTTLE_CG "/io.max", line);
	if (ret)
		return ret;
	snprintf(line, sizeof(line), "%d", getpid());
	return write_text(THROTTLE_CG "/cgroup.procs", line);
}

static void throttle_end(void)
{
	char line[32];

	snprintf(line, sizeof(line), "%d", getpid());
	write_text("/sys/fs/cgroup/cgroup.procs", line);
	rmdir(THROTTLE_CG);
}

/*
 * Queue @n 4 KiB reads of the disk from @pos on into the buffer in slot 0
 * (read i at offset i * 4096 of both), not waiting for them; returns what
 * io_uring_submit() does.
 */
static int queue_reads(struct io_uring *ring, int fd, unsigned int n, uint64_t pos)
{
	for (unsigned int i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		io_uring_prep_read_fixed(sqe, fd, (void *)(uintptr_t)(i * 4096),
					 4096, pos + i * 4096, 0);
		sqe->user_data = i;
	}
	return io_uring_submit(ring);
}

/* Reap what completed; returns how many are still in flight. */
static unsigned int reap_reads(struct io_uring *ring, unsigned int inflight,
			       int *res, bool wait)
{
	struct io_uring_cqe *cqe;

	while (inflight) {
		if (wait ? io_uring_wait_cqe(ring, &cqe) :
			   io_uring_peek_cqe(ring, &cqe))
			break;
		res[cqe->user_data] = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		inflight--;
	}
	return inflight;
}

/*
 * An invalidation waits only for I/O the device holds, not for I/O parked
 * above the driver.  32 reads are queued behind an io.max limit of 4 reads
 * a second, so that draining them takes 8 s; a migration and then a
 * revocation of the buffer must return while most of them are still
 * parked.  Parked reads then reach the driver with a mapping that is gone:
 * after the migration they are issued again and land in the new memory,
 * after the revocation they fail with ENODEV.
 */
TEST_F_TIMEOUT(texp, invalidation_does_not_wait_for_io_held_by_blk_throttle, 300)
{
	const unsigned int n = 32;
	unsigned int left, ok = 0, enodev = 0;
	int res[32];
	double took;

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, READ_BASE));
	ASSERT_EQ(0, throttle_begin(self->fd, 4));

	/* A move: prompt; the parked reads complete with their data. */
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 1, 0,
			     memset(self->kbuf, 0, n * 4096), n * 4096));
	ASSERT_EQ((int)n, queue_reads(&self->ring, self->fd, n, READ_BASE));
	usleep(500000);
	ASSERT_EQ(0, texp_op_timed(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, &took));
	left = reap_reads(&self->ring, n, res, false);
	TH_LOG("migration took %.3f s with %u of %u throttled reads parked",
	       took, left, n);
	EXPECT_GT(2.0, took);
	EXPECT_LE(n / 2, left);
	EXPECT_EQ(0, reap_reads(&self->ring, left, res, true));
	for (unsigned int i = 0; i < n; i++)
		EXPECT_EQ(4096, res[i]);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 0, self->kbuf, n * 4096));
	EXPECT_EQ(-1, pattern_check(self->kbuf, n * 4096, READ_SEED, READ_BASE));

	/* A revocation: prompt; the parked reads fail with ENODEV. */
	ASSERT_EQ((int)n, queue_reads(&self->ring, self->fd, n, READ_BASE));
	usleep(500000);
	ASSERT_EQ(0, texp_op_timed(self->ctl, DMABUF_TEST_IOC_REVOKE, self->dbuf, &took));
	left = reap_reads(&self->ring, n, res, false);
	TH_LOG("revocation took %.3f s with %u of %u throttled reads parked",
	       took, left, n);
	EXPECT_GT(2.0, took);
	EXPECT_LE(n / 2, left);
	EXPECT_EQ(0, reap_reads(&self->ring, left, res, true));
	for (unsigned int i = 0; i < n; i++) {
		ok += res[i] == 4096;
		enodev += res[i] == -ENODEV;
	}
	TH_LOG("after the revocation: %u reads done, %u failed with ENODEV",
	       ok, enodev);
	EXPECT_EQ(n, ok + enodev);
	/* those parked then, but for the few the device had at the time */
	EXPECT_LE(left, enodev + 4);
	throttle_end();

	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, self->dbuf, 0));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, READ_BASE));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/* Requests of the disk the driver holds, reads and writes ("inflight"). */
static int disk_inflight(const char *inflight_path)
{
	unsigned int r = 0, w = 0;
	FILE *f = fopen(inflight_path, "r");

	if (!f)
		return -errno;
	if (fscanf(f, "%u %u", &r, &w) != 2)
		r = w = 0;
	fclose(f);
	return r + w;
}

struct slow_pread {
	int fd;
	void *buf;
	ssize_t res;
};

static void *slow_pread_thread(void *arg)
{
	struct slow_pread *p = arg;

	p->res = pread(p->fd, p->buf, 4096, 0);
	return NULL;
}

struct queue_freeze {
	const char *path;	/* queue/nr_requests */
	char value[32];
	int res;
	volatile int done;
};

/*
 * A change of nr_requests freezes the queue: it waits for every request
 * the disk holds, and I/O submitted meanwhile waits above the driver.
 */
static void *queue_freeze_thread(void *arg)
{
	struct queue_freeze *q = arg;

	q->res = write_text(q->path, q->value);
	q->done = 1;
	return NULL;
}

/*
 * An invalidation does not wait for I/O parked by a queue freeze.  The
 * test VM's slow namespace holds each command NVME_SLOW_LATENCY_S; a plain
 * read the device holds keeps a queue freeze in progress, and 16 dma-buf
 * reads submitted meanwhile wait above the driver (the disk's inflight
 * count shows only the plain read).  A migration of the buffer must return
 * at once: the device holds none of its I/O.  The parked reads then reach
 * the driver with a mapping that is gone, are issued again, and land in
 * the new memory (the null device reads zeroes over the pattern the buffer
 * held).
 */
TEST_F_TIMEOUT(texp, invalidation_does_not_wait_for_io_parked_by_a_queue_freeze, 300)
{
	const unsigned int n = 16;
	struct queue_freeze qf = { .path = NULL };
	struct slow_pread pr = { .res = 0 };
	char inflight[256], nr_path[256], old_nr[32] = "";
	pthread_t pr_thr, qf_thr;
	unsigned int left, nr, done;
	int sfd, pfd, res[16], i;
	double took;
	FILE *f;

	snprintf(inflight, sizeof(inflight), "%s", nvme_slow_path("/sys/block/%s/inflight"));
	snprintf(nr_path, sizeof(nr_path), "%s", nvme_slow_path("/sys/block/%s/queue/nr_requests"));
	sfd = open(nvme_slow_path("/dev/%s"), O_RDWR | O_DIRECT);
	if (sfd < 0)
		SKIP(return, "no slow namespace %s (the test VM has one)",
		     nvme_slow_path("/dev/%s"));
	pfd = open(nvme_slow_path("/dev/%s"), O_RDONLY | O_DIRECT);
	ASSERT_LE(0, pfd);
	f = fopen(nr_path, "r");
	ASSERT_NE(NULL, f);
	ASSERT_EQ(1, fscanf(f, "%31s", old_nr));
	fclose(f);
	nr = strtoul(old_nr, NULL, 0);
	ASSERT_LT(8, nr);
	qf.path = nr_path;
	snprintf(qf.value, sizeof(qf.value), "%u", nr - 1);
	/* the inflight count is that of accounted requests */
	ASSERT_EQ(0, write_text(nvme_slow_path("/sys/block/%s/queue/iostats"), "1"));

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, sfd));
	pattern_fill(self->kbuf, n * 4096, 0xf2, 0);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 1, 0, self->kbuf, n * 4096));

	/* the device holds a plain read; a freeze waits for it */
	ASSERT_EQ(0, posix_memalign(&pr.buf, 4096, 4096));
	pr.fd = pfd;
	ASSERT_EQ(0, pthread_create(&pr_thr, NULL, slow_pread_thread, &pr));
	for (i = 0; i < 200 && disk_inflight(inflight) < 1 && !pr.res; i++)
		usleep(10000);
	ASSERT_EQ(1, disk_inflight(inflight)) TH_LOG("the plain read: %zd", pr.res);
	ASSERT_EQ(0, pthread_create(&qf_thr, NULL, queue_freeze_thread, &qf));
	usleep(200000);
	ASSERT_EQ(0, qf.done) TH_LOG("the queue froze at once: the read was not held");

	/* dma-buf reads wait for the freeze, above the driver */
	ASSERT_EQ((int)n, queue_reads(&self->ring, sfd, n, 0));
	usleep(300000);
	ASSERT_EQ(0, qf.done);
	EXPECT_EQ(1, disk_inflight(inflight));

	ASSERT_EQ(0, texp_op_timed(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, &took));
	left = reap_reads(&self->ring, n, res, false);
	TH_LOG("migration took %.3f s with %u of %u reads parked by a queue freeze",
	       took, left, n);
	EXPECT_GT(NVME_SLOW_LATENCY_S / 2, took);
	EXPECT_EQ(n, left);
	EXPECT_EQ(0, qf.done);

	EXPECT_EQ(0, reap_reads(&self->ring, left, res, true));
	for (i = 0, done = 0; i < (int)n; i++) {
		if (res[i] != 4096)
			TH_LOG("read %d: %d", i, res[i]);
		done += res[i] == 4096;
	}
	EXPECT_EQ(n, done);
	pthread_join(pr_thr, NULL);
	pthread_join(qf_thr, NULL);
	EXPECT_EQ(4096, pr.res);
	EXPECT_EQ(0, qf.res);
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 0, self->kbuf, n * 4096));
	for (i = 0; i < (int)(n * 4096); i++)
		if (((unsigned char *)self->kbuf)[i])
			break;
	EXPECT_EQ((int)(n * 4096), i) TH_LOG("byte %d is not what the device read", i);

	EXPECT_EQ(0, write_text(nr_path, old_nr));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	free(pr.buf);
	close(pfd);
	close(sfd);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/* Write "1" to a sysfs attribute. */
static int poke_sysfs(const char *path)
{
	return write_text(path, "1");
}

/* The sysfs "remove" attribute of the PCI device behind NVME_DEV. */
static int nvme_pci_remove_path(char *path, size_t size)
{
	char link[PATH_MAX];
	ssize_t n = readlink(nvme_path("/sys/block/%s/device/device"), link,
			     sizeof(link) - 1);

	if (n <= 0)
		return -errno;
	link[n] = 0;
	snprintf(path, size, "/sys/bus/pci/devices/%s/remove",
		 strrchr(link, '/') + 1);
	return 0;
}

struct unregister_race {
	struct io_uring *ring;
	int exit_ring;
};

static void *unregister_thread(void *arg)
{
	struct unregister_race *r = arg;

	if (r->exit_ring)
		io_uring_queue_exit(r->ring);
	else
		dmabufrw_unregister_slot(r->ring, 0);
	return NULL;
}

/*
 * Dropping a registration while the controller is being removed: the
 * removal tears down every context of the device and must not return while
 * a registration's own teardown is still about to unmap or detach against
 * it.  Many rounds of an emptied slot or a ring exit racing the PCI
 * removal, with a slow unmap to widen the window, under KASAN; each round
 * ends balanced, and the rescanned controller works.
 */
FIXTURE(removal) {
	int unused;
};

FIXTURE_SETUP(removal)
{
	REQUIRE_DMABUF_IO();
	if (access(TEXP_DEV, F_OK))
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
}

FIXTURE_TEARDOWN(removal)
{
}

TEST_F_TIMEOUT(removal, unregister_races_controller_removal, 600)
{
	char remove[PATH_MAX];
	struct dmabuf_test_stats st;
	int ctl, dbuf, round;

	ctl = texp_open();
	ASSERT_LE(0, ctl);
	dbuf = texp_create(ctl, MiB, 0);
	ASSERT_LE(0, dbuf);
	for (round = 0; round < 8; round++) {
		struct unregister_race r = { .exit_ring = round & 1 };
		struct io_uring ring;
		pthread_t thr;
		int fd = -1;

		for (int i = 0; i < 100 && fd < 0; i++) {
			fd = open(NVME_DEV, O_RDWR | O_DIRECT);
			if (fd < 0)
				usleep(100000);
		}
		ASSERT_LE(0, fd) TH_LOG("round %d: no %s", round, NVME_DEV);
		ASSERT_EQ(0, nvme_pci_remove_path(remove, sizeof(remove)));
		ASSERT_EQ(0, io_uring_queue_init(8, &ring, 0));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, dbuf, fd));
		ASSERT_EQ(4096, dmabufrw_rw_fixed(&ring, false, fd, 0, 0, 4096,
						  0));
		ASSERT_EQ(0, texp_delays(ctl, dbuf, 0, 20000 + round * 5000));
		close(fd);

		r.ring = &ring;
		ASSERT_EQ(0, pthread_create(&thr, NULL, unregister_thread, &r));
		usleep(round * 3000);
		ASSERT_EQ(0, poke_sysfs(remove));
		pthread_join(thr, NULL);
		if (!r.exit_ring)
			io_uring_queue_exit(&ring);
		EXPECT_EQ(0, wait_balanced(ctl, dbuf, &st))
			log_stats(_metadata, "exporter", &st);
		ASSERT_EQ(0, poke_sysfs("/sys/bus/pci/rescan"));
	}
	ASSERT_EQ(0, texp_delays(ctl, dbuf, 0, 0));
	check_exporter_clean(_metadata, ctl, dbuf);
	close(dbuf);
	close(ctl);
	/* the last rescan's controller serves the tests that follow */
	for (int i = 0; i < 100 && access(NVME_DEV, F_OK); i++)
		usleep(100000);
	ASSERT_EQ(0, access(NVME_DEV, F_OK));
}

TEST_HARNESS_MAIN
