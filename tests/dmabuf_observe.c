// SPDX-License-Identifier: GPL-2.0
/*
 * What a user sees of dma-buf I/O: the ring's fdinfo line of a dma-buf slot
 * and its counters, debugfs' dma_buf/io and dma_buf/bufinfo, and the
 * dmabuf_io trace events, checked value by value after known sequences of
 * I/Os, refusals and invalidations of the test exporter's buffers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <liburing.h>
#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "dmabufrw.h"

#define MiB		(1024UL * 1024)
#define BUF_SIZE	(1 * MiB)
#define DISK_OFF	(96 * MiB)	/* scratch area of this test */
#define TRACEFS		"/sys/kernel/tracing"

/* The number @key has in a slot's fdinfo line, or -1 without @key. */
static long long kv_num(const char *line, const char *key)
{
	char val[64];

	return dmabufrw_fdinfo_value(line, key, val, sizeof(val)) ? -1 :
	       strtoll(val, NULL, 0);
}

/* The exporter name of a dma-buf, from its fdinfo. */
static int dmabuf_exp_name(int fd, char *name, size_t size)
{
	char path[64], buf[256];
	int ret = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "exp_name: %63s", name) == 1 && size >= 64) {
			ret = 0;
			break;
		}
	fclose(f);
	return ret;
}

#define EXPECT_KV(line, key, want) do {					\
	char __v[128];							\
	ASSERT_EQ(0, dmabufrw_fdinfo_value(line, key, __v, sizeof(__v)))	\
		TH_LOG("no %s= in: %s", key, line);			\
	EXPECT_STREQ(want, __v) TH_LOG("%s in: %s", key, line);		\
} while (0)

#define EXPECT_KV_NUM(line, key, want) \
	EXPECT_EQ((long long)(want), kv_num(line, key)) TH_LOG("%s in: %s", key, line)

FIXTURE(observe) {
	struct io_uring ring;
	int fd, ctl, dbuf;
	unsigned long ino;
	void *p;
};

FIXTURE_SETUP(observe)
{
	REQUIRE_DMABUF_IO();
	self->ctl = texp_open();
	if (self->ctl == -ENOENT)
		SKIP(return, "no %s (CONFIG_DMABUF_TEST_EXPORTER)", TEXP_DEV);
	ASSERT_LE(0, self->ctl) TH_LOG("%s: %s", TEXP_DEV, strerror(-self->ctl));
	self->dbuf = texp_create(self->ctl, BUF_SIZE, 0);
	ASSERT_LE(0, self->dbuf);
	self->ino = file_ino(self->dbuf);
	self->fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, io_uring_queue_init(32, &self->ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&self->ring, 4));
	ASSERT_EQ(0, posix_memalign(&self->p, 4096, 64 * 1024));
	pattern_fill(self->p, 64 * 1024, 0x0b5, DISK_OFF);
	ASSERT_EQ(64 * 1024, pwrite(self->fd, self->p, 64 * 1024, DISK_OFF));
}

FIXTURE_TEARDOWN(observe)
{
	free(self->p);
	io_uring_queue_exit(&self->ring);
	close(self->fd);
	close(self->dbuf);
	close(self->ctl);
}

/*
 * The target's path is the last key and may hold any character: fdinfo
 * escapes space, tab, newline and backslash in octal, so that a value
 * never holds a space and dmabufrw_fdinfo_value() stops at the next one.
 * Registered through a device node named with a space and a backslash.
 */
TEST_F(observe, fdinfo_escapes_the_target_path)
{
	const char *node = "/tmp/nvme disk\\1";
	char line[512], val[128];
	struct stat st;
	int fd;

	ASSERT_EQ(0, fstat(self->fd, &st));
	mkdir("/tmp", 01777);
	unlink(node);
	ASSERT_EQ(0, mknod(node, S_IFBLK | 0600, st.st_rdev));
	fd = open(node, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, fd));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, self->ring.ring_fd, 0, line,
					  sizeof(line)));
	unlink(node);	/* after the read: d_path() would add " (deleted)" */
	EXPECT_NE(NULL, strstr(line, " file=/tmp/nvme\\040disk\\1341"))
		TH_LOG("%s", line);
	EXPECT_EQ(0, dmabufrw_fdinfo_value(line, "file", val, sizeof(val)));
	EXPECT_STREQ("/tmp/nvme\\040disk\\1341", val);
	close(fd);
}

/*
 * Every key of a dma-buf slot's fdinfo line, exactly, through a known
 * sequence: registered, 4 I/Os, 2 refusals, a migration, I/O, a revoke,
 * a failed mapping, a restore, I/O, and a second registration of a range
 * of the same buffer, which shares the mapping and its counters but not
 * the slot's I/O counters.
 */
TEST_F(observe, fdinfo_counts_ios_failures_and_invalidations_exactly)
{
	int rfd = self->ring.ring_fd;
	char line[512], want[256], exp[64];
	struct stat st;

	ASSERT_EQ(0, dmabuf_exp_name(self->dbuf, exp, sizeof(exp)));
	ASSERT_EQ(0, fstat(self->fd, &st));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));

	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_EQ(0, strncmp(line, "dmabuf offset=0 len=1048576 dev=", 32))
		TH_LOG("%s", line);
	EXPECT_KV_NUM(line, "ino", self->ino);
	EXPECT_KV(line, "exp", exp);
	EXPECT_KV_NUM(line, "size", BUF_SIZE);
	EXPECT_KV(line, "dma", "bidirectional");
	EXPECT_KV(line, "state", "unmapped");
	EXPECT_KV_NUM(line, "gen", 0);
	EXPECT_EQ(-1, kv_num(line, "ranges")) TH_LOG("%s", line);
	EXPECT_KV_NUM(line, "invalidations", 0);
	EXPECT_KV_NUM(line, "map_errors", 0);
	EXPECT_KV_NUM(line, "users", 1);
	EXPECT_KV_NUM(line, "ios", 0);
	EXPECT_KV_NUM(line, "bytes", 0);
	EXPECT_KV(line, "failed", "none");
	snprintf(want, sizeof(want), "%u:%u:%llu", major(st.st_rdev),
		 minor(st.st_rdev), (unsigned long long)st.st_ino);
	EXPECT_KV(line, "target", want);
	EXPECT_KV(line, "file", NVME_DEV);
	/* an empty slot keeps its old form */
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 1, line, sizeof(line)));
	EXPECT_STREQ("<none>", line);

	/* 3 reads of 4 KiB and a write of 8 KiB: 4 I/Os, 20 KiB */
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
						  i * 4096, 4096, DISK_OFF + i * 4096));
	ASSERT_EQ(8192, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					  8192, DISK_OFF + 32768));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV(line, "state", "mapped");
	EXPECT_KV_NUM(line, "gen", 1);
	EXPECT_LE(1, kv_num(line, "ranges")) TH_LOG("%s", line);
	EXPECT_KV(line, "mem", "system");
	/* whether the device needs syncs is the DMA API's answer */
	ASSERT_EQ(0, dmabufrw_fdinfo_value(line, "sync", want, sizeof(want)));
	EXPECT_TRUE(!strcmp(want, "yes") || !strcmp(want, "no")) TH_LOG("%s", line);
	EXPECT_KV_NUM(line, "ios", 4);
	EXPECT_KV_NUM(line, "bytes", 20480);
	EXPECT_KV(line, "failed", "none");

	/* a misaligned length (the block layer) and a range past the slot */
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					     0, 100, DISK_OFF));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					     BUF_SIZE - 4096, 8192, DISK_OFF));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV_NUM(line, "ios", 4);
	EXPECT_KV(line, "failed", "EINVAL:1,EFAULT:1");

	/* a move: unmapped, mapped again by the next I/O */
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, 0));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV(line, "state", "unmapped");
	EXPECT_KV_NUM(line, "gen", 1);
	EXPECT_KV_NUM(line, "invalidations", 1);
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, DISK_OFF));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV(line, "state", "mapped");
	EXPECT_KV_NUM(line, "gen", 2);
	EXPECT_KV_NUM(line, "ios", 5);
	EXPECT_KV_NUM(line, "bytes", 24576);

	/* a revoke: the next I/O cannot map it */
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_REVOKE, self->dbuf, 0));
	EXPECT_EQ(-ENODEV, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					     4096, DISK_OFF));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV(line, "state", "unmapped");
	EXPECT_KV_NUM(line, "gen", 2);
	EXPECT_KV_NUM(line, "invalidations", 2);
	EXPECT_KV_NUM(line, "map_errors", 1);
	EXPECT_KV(line, "failed", "EINVAL:1,EFAULT:1,ENODEV:1");
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_RESTORE, self->dbuf, 0));

	/* a range of the same buffer for the same device shares the mapping */
	ASSERT_EQ(0, dmabufrw_register_dmabuf_range(&self->ring, 2, self->dbuf,
						    self->fd, 65536, 131072, 0));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 2, 4096,
					  4096, DISK_OFF));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 2, line, sizeof(line)));
	EXPECT_EQ(0, strncmp(line, "dmabuf offset=65536 len=131072 ", 31))
		TH_LOG("%s", line);
	EXPECT_KV(line, "state", "mapped");
	EXPECT_KV_NUM(line, "gen", 3);
	EXPECT_KV_NUM(line, "invalidations", 2);
	EXPECT_KV_NUM(line, "users", 2);
	EXPECT_KV_NUM(line, "ios", 1);
	EXPECT_KV_NUM(line, "bytes", 4096);
	EXPECT_KV(line, "failed", "none");
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_KV_NUM(line, "gen", 3);
	EXPECT_KV_NUM(line, "users", 2);
	EXPECT_KV_NUM(line, "ios", 5);

	/* the data went where the counters say */
	ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 65536 + 4096, self->p, 4096));
	EXPECT_EQ(-1, pattern_check(self->p, 4096, 0x0b5, DISK_OFF));

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 2));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, rfd, 0, line, sizeof(line)));
	EXPECT_STREQ("<none>", line);
}

/*
 * Passthrough commands on the generic device count too: a command moves
 * its whole range (it completes with 0), a refused one counts by its
 * errno, both on interrupt-driven and polled rings (where the command
 * completes in the poll loop).
 */
TEST_F(observe, passthrough_commands_count_their_range_and_refusals)
{
	struct fixed_io x[3] = {
		{ .buf_off = 0, .off = DISK_OFF, .len = 4096 },
		{ .buf_off = 8192, .off = DISK_OFF, .len = 16384 },
		{ .buf_off = 65536, .off = DISK_OFF, .len = 8192 },
	};
	unsigned int nsid = 0, lba_shift = 0;
	char line[512];
	int ng;

	for (int polled = 0; polled < 2; polled++) {
		struct io_uring ring;
		unsigned int flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32;

		if (polled) {
			REQUIRE_POLL_QUEUES();
			flags |= IORING_SETUP_IOPOLL;
		}
		ng = nvme_ng_open(O_RDWR, self->fd, &nsid, &lba_shift);
		ASSERT_LE(0, ng) TH_LOG("%s: %s", nvme_ng_dev(), strerror(-ng));
		ASSERT_EQ(0, io_uring_queue_init(8, &ring, flags));
		ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 1));
		ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 0, self->dbuf, ng));
		ASSERT_EQ(0, nvme_io_batch(&ring, false, ng, nsid, lba_shift, 0,
					   x, 3, 3));
		/* past the buffer's end */
		struct fixed_io bad = { .buf_off = BUF_SIZE - 4096, .off = DISK_OFF, .len = 8192 };

		EXPECT_EQ(-EFAULT, nvme_io_batch(&ring, false, ng, nsid, lba_shift,
						 0, &bad, 1, 1));
		ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, ring.ring_fd, 0, line, sizeof(line)));
		EXPECT_KV_NUM(line, "ios", 3);
		EXPECT_KV_NUM(line, "bytes", 4096 + 16384 + 8192);
		EXPECT_KV(line, "failed", "EFAULT:1");
		/* and the data came */
		ASSERT_EQ(0, texp_rw(self->ctl, self->dbuf, 0, 8192, self->p, 16384));
		EXPECT_EQ(-1, pattern_check(self->p, 16384, 0x0b5, DISK_OFF));
		io_uring_queue_exit(&ring);
		close(ng);
	}
}

/* The line of debugfs' dma_buf/io with " ino=@ino ", or -1. */
static int debugfs_io_line(unsigned long ino, char *line, size_t size)
{
	FILE *f = fopen("/sys/kernel/debug/dma_buf/io", "r");
	char buf[512], want[32];
	int found = -1;

	if (!f)
		return -2;
	snprintf(want, sizeof(want), " ino=%lu ", ino);
	while (fgets(buf, sizeof(buf), f))
		if (strstr(buf, want)) {
			buf[strcspn(buf, "\n")] = 0;
			snprintf(line, size, "%s", buf);
			found = 0;
			break;
		}
	fclose(f);
	return found;
}

/*
 * debugfs lists the registration's context, whoever made it, with the same
 * counters, and bufinfo shows its attachment like any importer's; both go
 * once the registration is let go.
 */
TEST_F(observe, debugfs_lists_the_context_and_bufinfo_its_attachment)
{
	char line[512], slot[512];
	int attached = -1;
	long refs;

	ASSERT_EQ(-1, debugfs_io_line(self->ino, line, sizeof(line)));
	ASSERT_EQ(0, bufinfo(self->ino, &refs, &attached));
	EXPECT_EQ(0, attached);

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, DISK_OFF));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, 0));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, DISK_OFF));

	ASSERT_EQ(0, debugfs_io_line(self->ino, line, sizeof(line)));
	EXPECT_EQ(0, strncmp(line, "dev=", 4)) TH_LOG("%s", line);
	EXPECT_KV(line, "state", "mapped");
	EXPECT_KV_NUM(line, "gen", 2);
	EXPECT_KV_NUM(line, "invalidations", 1);
	EXPECT_KV_NUM(line, "map_errors", 0);
	EXPECT_KV_NUM(line, "users", 1);
	/* the slot's line carries the same context line */
	ASSERT_EQ(0, dmabufrw_slot_fdinfo(0, self->ring.ring_fd, 0, slot,
					  sizeof(slot)));
	EXPECT_NE(NULL, strstr(slot, line)) TH_LOG("%s\nnot in\n%s", line, slot);
	ASSERT_EQ(0, bufinfo(self->ino, &refs, &attached));
	EXPECT_EQ(1, attached);

	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	/* the release is a worker's; the test keeps its own fd */
	EXPECT_EQ(0, wait_bufinfo(self->ino, 0, 1));
	EXPECT_EQ(-1, debugfs_io_line(self->ino, line, sizeof(line)));
}

/*
 * Mount tracefs if need be; 0 if the dmabuf_io events are there.  Without
 * record-cmd, enabling an event does not hook sched_switch: that patches a
 * static branch in __schedule() while other CPUs run it, which under the
 * rig's TCG once ended in an int3 oops in the rcu_sched thread.  The tests
 * need no command names.
 */
static int tracefs_ready(void)
{
	if (access(TRACEFS "/trace", F_OK))
		mount("tracefs", TRACEFS, "tracefs", 0, NULL);
	write_text(TRACEFS "/options/record-cmd", "0");
	return access(TRACEFS "/events/dmabuf_io/enable", W_OK) ? -1 : 0;
}

/* The trace lines of @event for dma-buf @ino, each ending in "\n". */
static char *trace_lines(const char *trace, const char *event,
			 unsigned long ino, int *nr)
{
	char want[64], wino[32], *out = calloc(1, strlen(trace) + 1);
	const char *p = trace;

	snprintf(want, sizeof(want), " %s: ", event);
	snprintf(wino, sizeof(wino), " ino=%lu ", ino);
	*nr = 0;
	while (p && *p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p + 1) : strlen(p);
		char *l = strndup(p, len);

		if (strstr(l, want) && strstr(l, wino)) {
			strcat(out, strstr(l, want) + strlen(want));
			(*nr)++;
		}
		free(l);
		p += len;
	}
	return out;
}

static char *slurp(const char *path)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0 || !buf) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += n;
		if (cap - len < 4096)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = 0;
	close(fd);
	return buf;
}

/*
 * Each dmabuf_io event fires with its documented fields: a mapping made
 * (gen 1, then 2), the migration's invalidation and drain, a refused I/O,
 * and the teardown's drain when the registration is let go.
 */
TEST_F(observe, trace_events_fire_with_their_documented_fields)
{
	char *trace, *l;
	int nr;

	if (tracefs_ready())
		SKIP(return, "no dmabuf_io events in tracefs (kernel without CONFIG_TRACING)");
	ASSERT_EQ(0, write_text(TRACEFS "/events/dmabuf_io/enable", "1"));
	ASSERT_EQ(0, write_text(TRACEFS "/trace", ""));

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0, 0,
					  4096, DISK_OFF));
	ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, 0));
	ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, true, self->fd, 0, 0,
					  4096, DISK_OFF + 65536));
	EXPECT_EQ(-EINVAL, dmabufrw_rw_fixed(&self->ring, false, self->fd, 0,
					     0, 100, DISK_OFF));
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	EXPECT_EQ(0, wait_bufinfo(self->ino, 0, 1));

	ASSERT_EQ(0, write_text(TRACEFS "/events/dmabuf_io/enable", "0"));
	trace = slurp(TRACEFS "/trace");
	ASSERT_NE(NULL, trace);

	l = trace_lines(trace, "dmabuf_io_map", self->ino, &nr);
	EXPECT_EQ(2, nr) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " gen=1 ")) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " gen=2 ")) TH_LOG("%s", l);
	EXPECT_EQ(0, strncmp(l, "dev=", 4)) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " mem=system err=0 took_ns=")) TH_LOG("%s", l);
	EXPECT_LE(1, kv_num(l, "ranges")) TH_LOG("%s", l);
	free(l);

	l = trace_lines(trace, "dmabuf_io_invalidate", self->ino, &nr);
	EXPECT_EQ(1, nr) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " gen=1\n")) TH_LOG("%s", l);
	free(l);

	l = trace_lines(trace, "dmabuf_io_drained", self->ino, &nr);
	EXPECT_EQ(2, nr) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " gen=1 cause=invalidate ios=0 took_ns="))
		TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " gen=2 cause=teardown ios=0 took_ns="))
		TH_LOG("%s", l);
	free(l);

	l = trace_lines(trace, "dmabuf_io_refused", self->ino, &nr);
	EXPECT_EQ(1, nr) TH_LOG("%s", l);
	EXPECT_NE(NULL, strstr(l, " err=-22\n")) TH_LOG("%s", l);
	free(l);
	free(trace);
}

/*
 * The drain counts the I/Os the device still had: 16 reads of 1 MiB in
 * flight when the exporter moves the buffer.  Each either finished before
 * the move or was issued again after it; the drained event says how many
 * the invalidation waited for, which cannot exceed what was in flight.
 */
TEST_F(observe, drained_event_counts_the_ios_the_invalidation_waited_for)
{
	const unsigned int nr = 16;
	struct io_uring_cqe *cqe;
	unsigned long long total = 0;
	char *trace, *l, *p;
	int n, waited = 0;

	if (tracefs_ready())
		SKIP(return, "no dmabuf_io events in tracefs (kernel without CONFIG_TRACING)");
	ASSERT_EQ(0, write_text(TRACEFS "/events/dmabuf_io/dmabuf_io_drained/enable", "1"));
	ASSERT_EQ(0, write_text(TRACEFS "/trace", ""));
	ASSERT_EQ(0, dmabufrw_register_dmabuf(&self->ring, 0, self->dbuf, self->fd));

	/* a few rounds: the move lands while reads are in the device */
	for (int round = 0; round < 8; round++) {
		/* mapped first, so that the reads go to the device at once */
		ASSERT_EQ(4096, dmabufrw_rw_fixed(&self->ring, false, self->fd,
						  0, 0, 4096, DISK_OFF));
		for (unsigned int i = 0; i < nr; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

			ASSERT_NE(NULL, sqe);
			dmabufrw_prep_read_dmabuf(sqe, self->fd, 0, 0, 65536,
						  DISK_OFF);
		}
		ASSERT_EQ((int)nr, io_uring_submit(&self->ring));
		ASSERT_EQ(0, texp_op(self->ctl, DMABUF_TEST_IOC_MIGRATE, self->dbuf, 0));
		for (unsigned int i = 0; i < nr; i++) {
			ASSERT_EQ(0, io_uring_wait_cqe(&self->ring, &cqe));
			EXPECT_EQ(65536, cqe->res);
			io_uring_cqe_seen(&self->ring, cqe);
		}
	}
	ASSERT_EQ(0, dmabufrw_unregister_slot(&self->ring, 0));
	EXPECT_EQ(0, wait_bufinfo(self->ino, 0, 1));
	ASSERT_EQ(0, write_text(TRACEFS "/events/dmabuf_io/dmabuf_io_drained/enable", "0"));

	trace = slurp(TRACEFS "/trace");
	ASSERT_NE(NULL, trace);
	l = trace_lines(trace, "dmabuf_io_drained", self->ino, &n);
	/* one per migration that found a mapping, and the teardown's */
	EXPECT_LE(2, n) TH_LOG("%s", l);
	for (p = l; (p = strstr(p, " ios=")); p++) {
		long v = strtol(p + 5, NULL, 10);

		EXPECT_GE((long)nr, v) TH_LOG("%s", l);
		total += v;
		waited += v > 0;
	}
	TH_LOG("%d drains, %d waited for I/O, %llu I/Os in all", n, waited, total);
	free(l);
	free(trace);
}

TEST_HARNESS_MAIN
