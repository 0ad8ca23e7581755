// SPDX-License-Identifier: GPL-2.0
/*
 * The BPF dmabuf iterator (kernel/bpf/dmabuf_iter.c) lists every dma-buf of
 * the system exactly once, however the reader cuts its reads: with reads of
 * 64 bytes the seq_file stops and restarts the walk a thousand times, and
 * the iterator resumes from the buffer it holds a reference on across the
 * stop.  Each test creates 2000 dma-bufs (udmabuf and system heap, sizes
 * of 1 to 17 pages so that neighbours always differ, a unique name each
 * through DMA_BUF_SET_NAME) and checks what the iterator lists against
 * what it created and against debugfs dma_buf/bufinfo, which walks the
 * same list under its mutex and shows each buffer's file reference count:
 * that count is how the tests see the reference an iterator holds.
 *
 * The BPF programs are tests/dmabuf_iter.bpf.c, embedded as a bpftool
 * skeleton.  Needs a kernel with BPF_SYSCALL and BTF (the bpf flavour).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/dma-buf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kselftest_harness.h"
#include "util.h"
#include "dmabufrw.h"
#include "dmabuf_iter.skel.h"

#ifndef ENOTSUPP
#define ENOTSUPP	524	/* the kernel's, for a missing test_run */
#endif

#define NBUF		2000
#define MAXBUF		(NBUF + 2048)
#define PAGE		4096
#define BUFINFO		"/sys/kernel/debug/dma_buf/bufinfo"
#define BPFFS		"/sys/fs/bpf"
#define SMALL		64
#define LARGE		(1 << 20)

/* One dma-buf this test made. */
struct dbuf {
	int fd;			/* -1 once closed */
	uint64_t ino;
	uint64_t size;
	const char *exp;	/* exporter name: "udmabuf" or "system" */
	char name[DMA_BUF_NAME_LEN];
	bool must;		/* alive for the whole pass: listed exactly once */
	int seen;		/* lines of the pass with its inode */
};

/* One line of the iterator: "seq_num ino size exporter name". */
struct line {
	uint64_t seq, ino, size;
	char exp[16];
	char name[DMA_BUF_NAME_LEN];
};

/* One buffer in debugfs bufinfo. */
struct binfo {
	uint64_t ino, size;
	long count;
	char exp[16];
	char name[DMA_BUF_NAME_LEN];
};

/* An iterator fd being read, the text so far and its complete lines. */
struct reader {
	int fd;
	char *text;
	size_t len, cap, parsed;
	struct line *lines;
	size_t n, lcap;
	unsigned int reads;
	int bad;		/* malformed lines */
};

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char msg[1024];

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* diagnostics only: keep them out of the TAP lines */
	for (char *l = strtok(msg, "\n"); l; l = strtok(NULL, "\n"))
		fprintf(stderr, "# %s\n", l);
	return 0;
}

static void reader_init(struct reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
}

static void reader_free(struct reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->text);
	free(r->lines);
	r->fd = -1;
}

static void parse_new_lines(struct reader *r)
{
	char *nl;

	while ((nl = memchr(r->text + r->parsed, '\n', r->len - r->parsed))) {
		char *s = r->text + r->parsed;
		struct line *l;
		int end = 0;

		*nl = 0;
		if (r->n == r->lcap) {
			r->lcap = r->lcap ? 2 * r->lcap : 4096;
			r->lines = realloc(r->lines, r->lcap * sizeof(*l));
		}
		l = &r->lines[r->n];
		memset(l, 0, sizeof(*l));
		if (sscanf(s, "%lu %lu %lu %15s %n", &l->seq, &l->ino, &l->size,
			   l->exp, &end) != 4 || !end || strlen(s + end) >= sizeof(l->name))
			r->bad++;
		else
			strcpy(l->name, s + end);
		r->n++;
		*nl = '\n';
		r->parsed = nl + 1 - r->text;
	}
}

/* One read() of at most @chunk bytes: its result, or -errno. */
static ssize_t reader_read(struct reader *r, size_t chunk)
{
	ssize_t ret;

	if (r->cap - r->len < chunk + 1) {
		r->cap = (r->cap + chunk + 1) * 2;
		r->text = realloc(r->text, r->cap);
	}
	ret = read(r->fd, r->text + r->len, chunk);
	r->reads++;
	if (ret < 0)
		return -errno;
	r->len += ret;
	parse_new_lines(r);
	return ret;
}

/* Read to the end: 0, or the -errno of the first failed read. */
static int reader_drain(struct reader *r, size_t chunk)
{
	ssize_t ret;

	while ((ret = reader_read(r, chunk)) > 0)
		;
	return ret;
}

static int bufinfo_read(struct binfo **out, size_t *total)
{
	size_t len = 0, cap = 1 << 20, n = 0, ncap = 4096;
	char *text = malloc(cap), *s, *save;
	struct binfo *b = malloc(ncap * sizeof(*b));
	int fd = open(BUFINFO, O_RDONLY);
	ssize_t ret;

	if (fd < 0)
		return -errno;
	while ((ret = read(fd, text + len, cap - len - 1)) > 0) {
		len += ret;
		if (cap - len < 65536)
			text = realloc(text, cap *= 2);
	}
	close(fd);
	if (ret < 0)
		return -errno;
	text[len] = 0;
	*total = 0;
	for (s = strtok_r(text, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
		unsigned int flags, mode;
		size_t t;
		int c;

		if (n == ncap)
			b = realloc(b, (ncap *= 2) * sizeof(*b));
		if (sscanf(s, "%lu\t%x\t%x\t%ld\t%15[^\t]\t%lu\t%31[^\n]", &b[n].size,
			   &flags, &mode, &b[n].count, b[n].exp, &b[n].ino, b[n].name) == 7)
			n++;
		else if (sscanf(s, "Total %d objects, %zu bytes", &c, &t) == 2)
			*total = t;
	}
	free(text);
	*out = b;
	return n;
}

FIXTURE(dmabuf_iter) {
	struct dmabuf_iter_bpf *skel;
	struct bpf_link *link;
	struct dbuf *bufs;
	int nbufs;
	int *hash;		/* inode -> index in bufs, open addressing */
	unsigned int hmask;
	bool mounted;
};

static void hash_add(FIXTURE_DATA(dmabuf_iter) *self, int i)
{
	unsigned int h = (self->bufs[i].ino * 0x9e3779b1u) & self->hmask;

	while (self->hash[h] >= 0)
		h = (h + 1) & self->hmask;
	self->hash[h] = i;
}

static struct dbuf *find_buf(FIXTURE_DATA(dmabuf_iter) *self, uint64_t ino)
{
	unsigned int h = (ino * 0x9e3779b1u) & self->hmask;

	for (; self->hash[h] >= 0; h = (h + 1) & self->hmask)
		if (self->bufs[self->hash[h]].ino == ino)
			return &self->bufs[self->hash[h]];
	return NULL;
}

/* Make buffer number @i: udmabuf for even @i, system heap for odd. */
static int make_buf(FIXTURE_DATA(dmabuf_iter) *self, char tag)
{
	int i = self->nbufs;
	struct dbuf *b = &self->bufs[i];
	struct stat st;

	if (i >= MAXBUF)
		return -ENOSPC;
	b->size = (1 + i % 17) * PAGE;
	b->exp = i % 2 ? "system" : "udmabuf";
	b->fd = i % 2 ? dmabufrw_alloc_heap("system", b->size) :
			dmabufrw_alloc_udmabuf(b->size, NULL);
	if (b->fd < 0)
		return b->fd;
	snprintf(b->name, sizeof(b->name), "dit-%c-%c-%05d", tag, b->exp[0], i);
	if (dmabufrw_set_name(b->fd, b->name) < 0 || fstat(b->fd, &st) < 0) {
		close(b->fd);
		return -errno;
	}
	b->ino = st.st_ino;
	b->must = true;
	self->nbufs++;
	hash_add(self, i);
	return i;
}

static void close_buf(struct dbuf *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
	b->must = false;
}

FIXTURE_SETUP(dmabuf_iter)
{
	struct rlimit rl = { MAXBUF + 256, MAXBUF + 256 };
	double t0 = now_sec();

	if (access("/sys/kernel/btf/vmlinux", R_OK))
		SKIP(return, "no kernel BTF (needs the bpf kernel flavour)");
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &rl));
	libbpf_set_print(print_libbpf);
	self->skel = dmabuf_iter_bpf__open_and_load();
	if (!self->skel && errno == EINVAL)
		TH_LOG("EINVAL without a verifier log: is the kernel built with BPF_EVENTS (BPF_PROG_TYPE_TRACING)?");
	ASSERT_NE(NULL, self->skel);
	self->link = bpf_program__attach_iter(self->skel->progs.dmabuf_lines, NULL);
	ASSERT_NE(NULL, self->link);

	self->bufs = calloc(MAXBUF, sizeof(*self->bufs));
	self->hmask = 16384 - 1;
	self->hash = malloc((self->hmask + 1) * sizeof(int));
	memset(self->hash, 0xff, (self->hmask + 1) * sizeof(int));
	for (int i = 0; i < NBUF; i++)
		ASSERT_LE(0, make_buf(self, 'a'));
	TH_LOG("%d dma-bufs made in %.1f s", NBUF, now_sec() - t0);
}

FIXTURE_TEARDOWN(dmabuf_iter)
{
	for (int i = 0; i < self->nbufs; i++)
		close_buf(&self->bufs[i]);
	bpf_link__destroy(self->link);
	dmabuf_iter_bpf__destroy(self->skel);
	if (self->mounted)
		umount(BPFFS);
	free(self->bufs);
	free(self->hash);
}

static int new_iter(FIXTURE_DATA(dmabuf_iter) *self)
{
	self->skel->bss->shows = 0;
	self->skel->bss->fills = 0;
	return bpf_iter_create(bpf_link__fd(self->link));
}

/*
 * The checks of one pass: lines numbered 0, 1, 2... by the iterator's
 * seq_num, no inode twice, every buffer of ours marked @must listed once
 * with its size, exporter and name, no buffer listed that we did not know.
 * Returns the number of problems; logs the first ones.
 */
static int check_pass(struct __test_metadata *_metadata,
		      FIXTURE_DATA(dmabuf_iter) *self, struct reader *r,
		      const struct binfo *before, int nbefore)
{
	int bad = 0, logged = 0;

#define PROBLEM(fmt, ...) do { \
		if (logged++ < 10) \
			TH_LOG(fmt, ##__VA_ARGS__); \
		bad++; \
	} while (0)

	if (r->bad)
		PROBLEM("%d malformed lines", r->bad);
	if (r->parsed != r->len)
		PROBLEM("the text ends in a partial line");
	for (int i = 0; i < self->nbufs; i++)
		self->bufs[i].seen = 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct line *l = &r->lines[i];
		struct dbuf *b = find_buf(self, l->ino);

		if (l->seq != i)
			PROBLEM("line %zu has seq_num %lu", i, l->seq);
		if (!b) {
			bool known = false;

			for (int j = 0; j < nbefore && !known; j++)
				known = before[j].ino == l->ino;
			if (!known)
				PROBLEM("line %zu: inode %lu is not a buffer we know", i, l->ino);
			continue;
		}
		if (++b->seen == 2)
			PROBLEM("%s (inode %lu) listed twice", b->name, b->ino);
		if (l->size != b->size || strcmp(l->exp, b->exp) || strcmp(l->name, b->name))
			PROBLEM("line %zu: %lu %s %s, but %s is %lu bytes from %s", i,
				l->size, l->exp, l->name, b->name, b->size, b->exp);
	}
	for (int i = 0; i < self->nbufs; i++)
		if (self->bufs[i].must && !self->bufs[i].seen)
			PROBLEM("%s (inode %lu) not listed", self->bufs[i].name,
				self->bufs[i].ino);
#undef PROBLEM
	return bad;
}

/* The pass lists exactly bufinfo's buffers, in bufinfo's order. */
static int same_as_bufinfo(struct __test_metadata *_metadata, struct reader *r,
			   const struct binfo *bi, int nbi)
{
	if ((size_t)nbi != r->n) {
		TH_LOG("iterator: %zu buffers, bufinfo: %d", r->n, nbi);
		return 1;
	}
	for (int i = 0; i < nbi; i++) {
		const struct line *l = &r->lines[i];

		if (l->ino != bi[i].ino || l->size != bi[i].size ||
		    strcmp(l->exp, bi[i].exp) ||
		    strcmp(l->name, strcmp(bi[i].name, "<none>") ? bi[i].name : "-")) {
			TH_LOG("entry %d: iterator %lu %lu %s %s, bufinfo %lu %lu %s %s", i,
			       l->ino, l->size, l->exp, l->name, bi[i].ino, bi[i].size,
			       bi[i].exp, bi[i].name);
			return 1;
		}
	}
	return 0;
}

/* Our buffers in bufinfo, and how many of them have more than @refs refs. */
static int ours_in_bufinfo(FIXTURE_DATA(dmabuf_iter) *self, long refs, int *over,
			   uint64_t *over_ino)
{
	struct binfo *bi;
	size_t total;
	int n = bufinfo_read(&bi, &total), ours = 0;

	*over = 0;
	for (int i = 0; i < n; i++) {
		if (!find_buf(self, bi[i].ino))
			continue;
		ours++;
		if (bi[i].count > refs) {
			(*over)++;
			if (over_ino)
				*over_ino = bi[i].ino;
		}
	}
	if (n >= 0)
		free(bi);
	return n < 0 ? n : ours;
}

/*
 * Reads of 64 bytes: every buffer once, in the order and with the
 * attributes of bufinfo, and the seq_file restarted for about every second
 * line (each restart resumes from the buffer the iterator held).
 */
TEST_F_TIMEOUT(dmabuf_iter, small_reads_list_every_buffer_once, 300)
{
	struct binfo *bi;
	struct reader r;
	size_t total;
	int nbi;

	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	reader_init(&r, new_iter(self));
	ASSERT_LE(0, r.fd);
	ASSERT_EQ(0, reader_drain(&r, SMALL));
	/* no more after the end */
	EXPECT_EQ(0, reader_read(&r, SMALL));
	EXPECT_EQ(0, check_pass(_metadata, self, &r, bi, nbi));
	EXPECT_EQ(0, same_as_bufinfo(_metadata, &r, bi, nbi));
	EXPECT_EQ(r.n, self->skel->bss->shows);
	/* two lines of about 40 bytes fill a 64-byte read */
	EXPECT_LE(r.n / 3, self->skel->bss->fills);
	TH_LOG("%zu lines, %zu bytes in %u reads; the walk started %llu times",
	       r.n, r.len, r.reads, (unsigned long long)self->skel->bss->fills);
	reader_free(&r);
	free(bi);
}

/*
 * Reads of 1 MiB (each returns what fits the seq_file's 32 KiB), through
 * bpf_iter_create() and through the iterator pinned in bpffs: the same
 * text as with 64-byte reads of another open of the pinned iterator.
 */
TEST_F_TIMEOUT(dmabuf_iter, large_reads_and_pinned_iterator, 300)
{
	char path[64];
	struct reader a, b, c;
	struct binfo *bi;
	size_t total;
	int nbi;

	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	reader_init(&a, new_iter(self));
	ASSERT_LE(0, a.fd);
	ASSERT_EQ(0, reader_drain(&a, LARGE));
	EXPECT_EQ(0, check_pass(_metadata, self, &a, bi, nbi));
	EXPECT_EQ(0, same_as_bufinfo(_metadata, &a, bi, nbi));
	EXPECT_GT(a.reads, a.len / 32768);
	TH_LOG("%zu lines, %zu bytes in %u reads", a.n, a.len, a.reads);

	if (mount("bpf", BPFFS, "bpf", 0, "mode=0700") == 0)
		self->mounted = true;
	else
		ASSERT_EQ(EBUSY, errno);
	snprintf(path, sizeof(path), BPFFS "/dmabuf_iter_%d", getpid());
	ASSERT_EQ(0, bpf_link__pin(self->link, path));
	reader_init(&b, open(path, O_RDONLY));
	reader_init(&c, open(path, O_RDONLY));
	ASSERT_LE(0, b.fd);
	ASSERT_LE(0, c.fd);
	/* interleaved: two sessions of one pinned iterator */
	ASSERT_EQ(SMALL, reader_read(&c, SMALL));
	ASSERT_EQ(0, reader_drain(&b, LARGE));
	ASSERT_EQ(0, reader_drain(&c, SMALL));
	EXPECT_EQ(0, bpf_link__unpin(self->link));
	EXPECT_EQ(0, check_pass(_metadata, self, &b, bi, nbi));
	EXPECT_EQ(0, check_pass(_metadata, self, &c, bi, nbi));
	ASSERT_EQ(a.len, b.len);
	ASSERT_EQ(a.len, c.len);
	EXPECT_EQ(0, memcmp(a.text, b.text, a.len));
	EXPECT_EQ(0, memcmp(a.text, c.text, a.len));
	reader_free(&a);
	reader_free(&b);
	reader_free(&c);
	free(bi);
}

/*
 * While a pass reads 64 bytes at a time, free buffers just ahead of it
 * (among them, now and then, the one it holds across the stop), free
 * others anywhere, make new ones and free some of those again.  Every
 * buffer alive for the whole pass is listed exactly once; freed ones at
 * most once; none twice; and afterwards every freed buffer is gone.
 */
TEST_F_TIMEOUT(dmabuf_iter, buffers_freed_and_made_during_the_walk, 600)
{
	int freed_ahead = 0, freed_random = 0, made = 0, freed_new = 0;
	int listed_freed = 0, listed_new = 0, over, ours, alive = 0;
	struct binfo *bi;
	struct reader r;
	ssize_t ret;
	size_t total;
	int nbi;

	srandom(7);
	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	reader_init(&r, new_iter(self));
	ASSERT_LE(0, r.fd);
	while ((ret = reader_read(&r, SMALL)) > 0) {
		struct dbuf *last;
		int k, i;

		if (r.reads % 4 || !r.n)
			continue;
		/*
		 * The list is newest first, so the next ones to be listed
		 * are the older ones: lower indexes.  Free every third of
		 * the next four (the first may be the one the iterator holds).
		 */
		last = find_buf(self, r.lines[r.n - 1].ino);
		if (last && last - self->bufs < NBUF) {
			k = last - self->bufs;
			for (i = k - 1; i >= 0 && i >= k - 4; i--) {
				if (i % 3 == 0 && self->bufs[i].fd >= 0) {
					close_buf(&self->bufs[i]);
					freed_ahead++;
				}
			}
		}
		i = random() % NBUF;
		if (i % 3 == 0 && self->bufs[i].fd >= 0) {
			close_buf(&self->bufs[i]);
			freed_random++;
		}
		if (self->nbufs < MAXBUF) {
			i = make_buf(self, 'n');
			ASSERT_LE(0, i);
			self->bufs[i].must = false;	/* made after the start */
			made++;
		}
		if (r.reads % 8 == 0 && self->nbufs > NBUF + 1) {
			i = NBUF + random() % (self->nbufs - NBUF - 1);
			if (self->bufs[i].fd >= 0) {
				close_buf(&self->bufs[i]);
				freed_new++;
			}
		}
	}
	ASSERT_EQ(0, ret);
	EXPECT_EQ(0, check_pass(_metadata, self, &r, bi, nbi));
	for (int i = 0; i < self->nbufs; i++) {
		struct dbuf *b = &self->bufs[i];

		alive += b->fd >= 0;
		if (i < NBUF && b->fd < 0 && b->seen)
			listed_freed++;
		if (i >= NBUF && b->seen)
			listed_new++;
	}
	TH_LOG("%zu lines in %u reads; freed %d ahead of the walk, %d elsewhere, %d new; "
	       "made %d; listed %d of the freed and %d of the new",
	       r.n, r.reads, freed_ahead, freed_random, freed_new, made,
	       listed_freed, listed_new);
	EXPECT_LT(100, freed_ahead);
	reader_free(&r);
	free(bi);

	/* Every freed buffer is gone, nothing holds an extra reference. */
	ours = ours_in_bufinfo(self, 1, &over, NULL);
	EXPECT_EQ(alive, ours);
	EXPECT_EQ(0, over);

	/* And a new pass lists exactly what is there now. */
	for (int i = 0; i < self->nbufs; i++)
		self->bufs[i].must = self->bufs[i].fd >= 0;
	nbi = bufinfo_read(&bi, &total);
	reader_init(&r, new_iter(self));
	ASSERT_EQ(0, reader_drain(&r, SMALL));
	EXPECT_EQ(0, check_pass(_metadata, self, &r, bi, nbi));
	EXPECT_EQ(0, same_as_bufinfo(_metadata, &r, bi, nbi));
	reader_free(&r);
	free(bi);
}

/*
 * Stop reading halfway: the iterator holds a reference on the next buffer
 * to list (bufinfo shows it with two file references, ours and the
 * iterator's); our fds closed, that buffer alone stays; the iterator fd
 * closed, it is freed too.
 */
TEST_F_TIMEOUT(dmabuf_iter, closing_halfway_drops_the_held_reference, 300)
{
	uint64_t held = 0, next = 0;
	struct binfo *bi;
	struct reader r;
	ssize_t ret = 0;
	size_t total;
	int nbi, over, ours;

	reader_init(&r, new_iter(self));
	ASSERT_LE(0, r.fd);
	/* a short read has emptied the seq_file buffer: nothing pending */
	while (r.n < NBUF / 2 || ret == SMALL) {
		ret = reader_read(&r, SMALL);
		ASSERT_LT(0, ret);
	}
	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	for (int i = 0; i + 1 < nbi; i++)
		if (bi[i].ino == r.lines[r.n - 1].ino)
			next = bi[i + 1].ino;
	free(bi);
	ASSERT_NE(0, next);

	ours = ours_in_bufinfo(self, 1, &over, &held);
	EXPECT_EQ(NBUF, ours);
	ASSERT_EQ(1, over);
	EXPECT_EQ(next, held);
	TH_LOG("after %zu of %d lines the iterator holds %s", r.n, NBUF,
	       find_buf(self, held)->name);

	for (int i = 0; i < self->nbufs; i++)
		close_buf(&self->bufs[i]);
	ours = ours_in_bufinfo(self, 0, &over, &held);
	EXPECT_EQ(1, ours);
	EXPECT_EQ(next, held);

	reader_free(&r);
	ours = ours_in_bufinfo(self, 0, &over, NULL);
	EXPECT_EQ(0, ours);

	/* the iterator agrees */
	reader_init(&r, new_iter(self));
	ASSERT_EQ(0, reader_drain(&r, LARGE));
	for (size_t i = 0; i < r.n; i++)
		EXPECT_EQ(NULL, find_buf(self, r.lines[i].ino));
	reader_free(&r);
}

/*
 * The program asks to retry a buffer (returns 1).  When the buffer is the
 * first of a seq_file fill, that read fails with EAGAIN and the next one
 * starts again with the buffer; otherwise the read returns what came before
 * and the next fill starts with the buffer.  Either way the buffer is listed
 * once, the pass is complete and afterwards no buffer has a reference more
 * than our fd.  @eagain: the EAGAIN failures expected, -1 for 0 or 1.
 */
static void retry_pass(struct __test_metadata *_metadata,
		       FIXTURE_DATA(dmabuf_iter) *self, struct dbuf *victim,
		       int expect_eagain)
{
	int eagain = 0, over, ours;
	struct binfo *bi;
	struct reader r;
	ssize_t ret;
	size_t total;
	int nbi;

	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	self->skel->bss->eagain_ino = victim->ino;
	self->skel->bss->eagain_done = 0;
	reader_init(&r, new_iter(self));
	ASSERT_LE(0, r.fd);
	while ((ret = reader_read(&r, SMALL)) != 0) {
		if (ret == -EAGAIN && !eagain++)
			continue;
		ASSERT_LT(0, ret);
	}
	if (expect_eagain >= 0)
		EXPECT_EQ(expect_eagain, eagain);
	EXPECT_GE(1, eagain);
	EXPECT_EQ(1, self->skel->bss->eagain_done);
	TH_LOG("%d read(s) failed with EAGAIN", eagain);
	EXPECT_EQ(0, check_pass(_metadata, self, &r, bi, nbi));
	EXPECT_EQ(0, same_as_bufinfo(_metadata, &r, bi, nbi));
	reader_free(&r);
	free(bi);

	ours = ours_in_bufinfo(self, 1, &over, NULL);
	EXPECT_EQ(self->nbufs, ours);
	EXPECT_EQ(0, over);
	close_buf(victim);
	ours = ours_in_bufinfo(self, 0, &over, NULL);
	EXPECT_EQ(self->nbufs - 1, ours);
}

TEST_F_TIMEOUT(dmabuf_iter, retry_in_the_middle_of_the_walk, 300)
{
	retry_pass(_metadata, self, &self->bufs[NBUF / 2], -1);
}

/* The newest buffer is the first the walk lists: the retry is at pos 0. */
TEST_F_TIMEOUT(dmabuf_iter, retry_of_the_first_buffer, 300)
{
	retry_pass(_metadata, self, &self->bufs[self->nbufs - 1], 1);
}

/*
 * A line longer than the seq_file buffer (32 KiB) fails the read with
 * E2BIG, again when retried; closing the iterator then drops the reference
 * it held on that buffer.
 */
static void e2big_pass(struct __test_metadata *_metadata,
		       FIXTURE_DATA(dmabuf_iter) *self, struct dbuf *victim)
{
	struct reader r;
	ssize_t ret;
	int over, ours;

	self->skel->bss->big_ino = victim->ino;
	reader_init(&r, new_iter(self));
	ASSERT_LE(0, r.fd);
	while ((ret = reader_read(&r, SMALL)) > 0)
		;
	EXPECT_EQ(-E2BIG, ret);
	/* what came before is all there, the victim is not */
	for (size_t i = 0; i < r.n; i++)
		EXPECT_NE(victim->ino, r.lines[i].ino);
	EXPECT_EQ(-E2BIG, reader_read(&r, SMALL));
	EXPECT_EQ(-E2BIG, reader_read(&r, SMALL));
	TH_LOG("E2BIG after %zu lines", r.n);
	reader_free(&r);
	self->skel->bss->big_ino = 0;

	ours = ours_in_bufinfo(self, 1, &over, NULL);
	EXPECT_EQ(self->nbufs, ours);
	EXPECT_EQ(0, over);
	close_buf(victim);
	ours = ours_in_bufinfo(self, 0, &over, NULL);
	EXPECT_EQ(self->nbufs - 1, ours);
}

TEST_F_TIMEOUT(dmabuf_iter, oversized_line_in_the_middle_of_the_walk, 300)
{
	e2big_pass(_metadata, self, &self->bufs[NBUF / 2]);
}

TEST_F_TIMEOUT(dmabuf_iter, oversized_first_line, 300)
{
	e2big_pass(_metadata, self, &self->bufs[self->nbufs - 1]);
}

/*
 * The open-coded iterator (bpf_iter_dmabuf_new/next/destroy kfuncs) in a
 * syscall program: as many buffers and bytes as bufinfo counts.
 */
TEST_F_TIMEOUT(dmabuf_iter, open_coded_iterator_counts_every_buffer, 300)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	struct binfo *bi;
	size_t total;
	int nbi, named = 0, ret;

	nbi = bufinfo_read(&bi, &total);
	ASSERT_LE(NBUF, nbi);
	for (int i = 0; i < nbi; i++)
		named += strcmp(bi[i].name, "<none>") != 0;
	ret = bpf_prog_test_run_opts(bpf_program__fd(self->skel->progs.dmabuf_walk), &opts);
	if (ret && (errno == ENOTSUPP || errno == EOPNOTSUPP))
		SKIP(goto out, "BPF_PROG_TEST_RUN of syscall programs needs CONFIG_NET");
	ASSERT_EQ(0, ret);
	EXPECT_EQ(0, opts.retval);
	EXPECT_EQ(0, self->skel->bss->oc_err);
	EXPECT_EQ(nbi, self->skel->bss->oc_count);
	EXPECT_EQ(total, self->skel->bss->oc_bytes);
	EXPECT_EQ(named, self->skel->bss->oc_named);
out:
	free(bi);
}

TEST_HARNESS_MAIN
