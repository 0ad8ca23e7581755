// SPDX-License-Identifier: GPL-2.0
/*
 * Invalidation of registered dma-bufs: the series' test exporter migrates,
 * revokes and fences a buffer while io_uring moves data between it and the
 * emulated NVMe namespace.  Every completed I/O is verified, every failure
 * must carry a documented errno, and the poison the exporter leaves in the
 * memory it moved away from must be intact: no DMA after invalidation.
 *
 * dmabufrw_storm_seconds=N (kernel command line, or environment) sets the
 * length of each migration storm (default 45 s); `make soak` runs the storm
 * alone for longer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <liburing.h>

#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
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

static int storm_seconds(void)
{
	const char *s = getenv("dmabufrw_storm_seconds");

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
struct storm_io {
	int ctl, dbuf, fd, write;
	const int *allowed;		/* errnos a failed I/O may carry, 0-ended */
	volatile int *stop;
	unsigned int seed;
	/* results */
	int setup_error;
	unsigned long done, failed, bad_errno, data_errors, poison_hits;
	unsigned long by_errno[MAX_ERRNO + 1];
};

struct io_slot {
	uint64_t off, seed;
	unsigned int len;
};

static int errno_allowed(const int *allowed, int err)
{
	for (; allowed && *allowed; allowed++)
		if (*allowed == err)
			return 1;
	return 0;
}

static void storm_prep(struct storm_io *s, struct io_uring *ring, void *kbuf,
		       struct io_slot *sl, unsigned int i, uint64_t *counter)
{
	uint64_t slot_off = (s->write ? QD + i : i) * SLOT;
	struct io_uring_sqe *sqe;

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
	if (texp_rw(s->ctl, s->dbuf, 1, slot_off, kbuf, sl->len))
		s->setup_error = -EIO;

	sqe = io_uring_get_sqe(ring);
	if (s->write)
		io_uring_prep_write_fixed(sqe, s->fd, (void *)(uintptr_t)slot_off,
					  sl->len, sl->off, 0);
	else
		io_uring_prep_read_fixed(sqe, s->fd, (void *)(uintptr_t)slot_off,
					 sl->len, sl->off, 0);
	sqe->user_data = i;
}

static void storm_check(struct storm_io *s, void *kbuf, struct io_slot *sl,
			unsigned int i)
{
	uint64_t slot_off = (s->write ? QD + i : i) * SLOT;
	uint64_t seed = s->write ? sl->seed : READ_SEED;

	if (s->write) {
		if (pread(s->fd, kbuf, sl->len, sl->off) != sl->len) {
			s->data_errors++;
			return;
		}
	} else if (texp_rw(s->ctl, s->dbuf, 0, slot_off, kbuf, sl->len)) {
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
	ret = io_uring_queue_init(2 * QD, &ring, 0);
	if (!ret)
		ret = io_uring_register_buffers_sparse(&ring, 1);
	if (!ret)
		ret = io_uring_register_dmabuf(&ring, 0, s->dbuf, s->fd);
	if (ret) {
		s->setup_error = ret;
		free(kbuf);
		return NULL;
	}
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
			if (cqe->res == (int)sl->len) {
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
	self->ctl = texp_open();
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s (CONFIG_DMABUF_TEST_EXPORTER?)",
				       TEXP_DEV, strerror(-self->ctl));
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

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
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
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * Reader and writer rings at QD 64 each, each with its own registration of
 * the buffer, while the exporter migrates it every 1-5 ms: every I/O
 * completes and is verified, and no retired memory was touched.
 */
TEST_F_TIMEOUT(texp, migration_storm_loses_no_data_and_no_dma_is_stale, 3600)
{
	const int none[] = { 0 };
	volatile int stop = 0;
	struct storm_io rd = { .ctl = self->ctl, .dbuf = self->dbuf, .fd = self->fd,
			       .allowed = none, .stop = &stop, .seed = 1 };
	struct storm_io wr = rd;
	struct migrator m = { .ctl = self->ctl, .dbuf = self->dbuf, .min_us = 1000,
			      .max_us = 5000, .seed = 3, .stop = &stop };
	pthread_t trd, twr, tm;
	int seconds = storm_seconds();
	struct dmabuf_test_stats st;
	double t0;

	wr.write = 1;
	wr.seed = 2;
	t0 = now_sec();
	ASSERT_EQ(0, pthread_create(&trd, NULL, storm_io_thread, &rd));
	ASSERT_EQ(0, pthread_create(&twr, NULL, storm_io_thread, &wr));
	ASSERT_EQ(0, pthread_create(&tm, NULL, migrator_thread, &m));
	while (now_sec() - t0 < seconds)
		usleep(100000);
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
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_CHECK_RETIRED, self->dbuf, 0));
	ASSERT_EQ(0, wait_balanced(self->ctl, self->dbuf, &st));
	/* The storm must have made the I/O remap, or it proved nothing. */
	EXPECT_LT(2, st.maps);
	printf("# storm: exporter=%s seconds=%.0f reads=%lu writes=%lu failed=%lu migrations=%llu invalidations=%llu maps=%llu unmaps=%llu retired_checked=%llu stale_bytes=%llu stale_data=%lu data_errors=%lu\n",
	       variant->flags ? "revoke-only" : "dynamic", now_sec() - t0,
	       rd.done, wr.done, rd.failed + wr.failed, st.migrations,
	       st.invalidations, st.maps, st.unmaps, st.retired_checked,
	       st.stale_bytes, rd.poison_hits + wr.poison_hits,
	       rd.data_errors + wr.data_errors);
	for (int e = 1; e <= MAX_ERRNO; e++)
		if (rd.by_errno[e] + wr.by_errno[e])
			printf("# storm: errno %s=%lu\n", strerrorname_np(e) ?: "?",
			       rd.by_errno[e] + wr.by_errno[e]);
	fflush(stdout);
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/*
 * A revoked buffer: new I/O fails with ENODEV while it is revoked and works
 * again after the exporter restores it.
 */
TEST_F(texp, revoked_buffer_fails_io_until_restored)
{
	struct dmabuf_test_stats st;
	void *p = self->kbuf;

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
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
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
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
	double t0, took;

	/* Widen the window between invalidation and the next mapping. */
	ASSERT_EQ(0, texp_delays(self->ctl, self->dbuf, 2000, 2000));
	ASSERT_EQ(0, pthread_create(&thr, NULL, storm_io_thread, &rd));
	usleep(1000000);
	before = rd.done;
	t0 = now_sec();
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_REVOKE, self->dbuf, 0));
	took = now_sec() - t0;
	usleep(500000);
	stop = 1;
	pthread_join(thr, NULL);
	TH_LOG("revoke took %.3f s with %lu reads done before it", took, before);
	check_storm_io(_metadata, "reader", &rd);
	EXPECT_LT(0, before);
	EXPECT_LT(0, rd.by_errno[ENODEV]);
	EXPECT_GT(30.0, took);

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, READ_BASE));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, self->dbuf, 0));
	EXPECT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0, 4096,
					  READ_BASE));
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
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
	struct io_uring_cqe *cqe;

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
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
			ASSERT_EQ(1, io_uring_submit(&self->ring));
			if (waits) {
				usleep(300000);
				EXPECT_EQ(-EAGAIN, io_uring_peek_cqe(&self->ring, &cqe))
					TH_LOG("%s of the buffer did not wait for a %s fence",
					       write ? "device read" : "device write",
					       cases[c].name);
				ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
						     self->dbuf, 0));
			}
			ASSERT_EQ(0, io_uring_wait_cqe_timeout(&self->ring, &cqe, &ts))
				TH_LOG("%s %s: no completion", cases[c].name,
				       write ? "write" : "read");
			EXPECT_EQ(4096, cqe->res);
			io_uring_cqe_seen(&self->ring, cqe);
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
					     self->dbuf, 0));
		}
	}
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
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
	struct io_uring_cqe *cqe;
	int pass;

	ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	for (pass = 0; pass < 2; pass++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

		/* Pass 1 runs unfenced and maps; pass 2 after the first fence. */
		if (pass)
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_ADD,
					     self->dbuf, DMABUF_TEST_FENCE_WRITE));
		io_uring_prep_read_fixed(sqe, self->fd, NULL, 4096, READ_BASE, 0);
		ASSERT_EQ(1, io_uring_submit(&self->ring));
		if (pass) {
			usleep(300000);
			EXPECT_EQ(-EAGAIN, io_uring_peek_cqe(&self->ring, &cqe))
				TH_LOG("the device wrote the buffer before its first fence signalled");
			ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_FENCE_SIGNAL,
					     self->dbuf, 0));
		}
		ASSERT_EQ(0, io_uring_wait_cqe_timeout(&self->ring, &cqe, &ts));
		EXPECT_EQ(4096, cqe->res);
		io_uring_cqe_seen(&self->ring, cqe);
	}
	ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
	check_exporter_clean(_metadata, self->ctl, self->dbuf);
}

/* A reader in a child process, which exits or is killed with I/O in flight. */
static void child_reader(int ctl, int dbuf, int fd, unsigned int seed,
			 int exit_after_us)
{
	volatile int stop = 0;
	struct storm_io rd = { .ctl = ctl, .dbuf = dbuf, .fd = fd, .stop = &stop,
			       .seed = seed };
	pthread_t thr;

	if (pthread_create(&thr, NULL, storm_io_thread, &rd))
		_exit(2);
	if (exit_after_us < 0)
		pause();	/* until killed */
	usleep(exit_after_us);
	if (rd.setup_error || rd.data_errors || rd.poison_hits)
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
		ASSERT_EQ(0, io_uring_register_dmabuf(&self->ring, 0, self->dbuf,
						      self->fd));
		for (int i = 0; i < 32; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

			io_uring_prep_read_fixed(sqe, self->fd,
						 (void *)(uintptr_t)(i * SLOT), SLOT,
						 READ_BASE + (iter * 32 + i) * SLOT, 0);
			sqe->user_data = i;
		}
		ASSERT_EQ(32, io_uring_submit(&self->ring));
		ASSERT_EQ(0, io_uring_unregister_buffer_slot(&self->ring, 0));
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
	rfd = open("/sys/class/nvme/nvme0/reset_controller", O_WRONLY);
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

TEST_HARNESS_MAIN
