// SPDX-License-Identifier: GPL-2.0
/*
 * BPF side of tests/dmabuf_iter.c: a dmabuf iterator program that prints one
 * line per dma-buf, and a syscall program that walks the dma-bufs with the
 * open-coded iterator kfuncs.
 *
 * Built with clang -target bpf against libbpf's headers only: the few kernel
 * types used are declared here with preserve_access_index, and libbpf
 * relocates every field access against the running kernel's BTF (CO-RE).
 */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define DMA_BUF_NAME_LEN	32

struct seq_file {
	unsigned long count;	/* size_t: long is 64-bit on bpf */
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct inode {
	__u64 i_ino;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct dma_buf {
	unsigned long size;
	struct file *file;
	const char *exp_name;
	const char *name;
} __attribute__((preserve_access_index));

struct bpf_iter__dmabuf {
	struct bpf_iter_meta *meta;
	struct dma_buf *dmabuf;
} __attribute__((preserve_access_index));

/* Opaque state of the open-coded iterator, as in kernel/bpf/dmabuf_iter.c. */
struct bpf_iter_dmabuf {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_dmabuf_new(struct bpf_iter_dmabuf *it) __ksym;
extern struct dma_buf *bpf_iter_dmabuf_next(struct bpf_iter_dmabuf *it) __ksym;
extern void bpf_iter_dmabuf_destroy(struct bpf_iter_dmabuf *it) __ksym;

char _license[] SEC("license") = "GPL";

/* Set by the test before it reads an iterator. */
__u64 eagain_ino;		/* ask once to retry this buffer (return 1) */
__u64 big_ino;			/* print more than the seq_file buffer for it */

/* Read by the test. */
__u64 eagain_done;
__u64 shows;			/* calls with a buffer */
__u64 fills;			/* calls that found the seq_file buffer empty */

/* open-coded walk: buffers seen, their total size, those with a name */
__u64 oc_count, oc_bytes, oc_named;
__s64 oc_err;

static char filler[4096];

SEC("iter/dmabuf")
int dmabuf_lines(struct bpf_iter__dmabuf *ctx)
{
	struct dma_buf *dmabuf = ctx->dmabuf;
	struct bpf_iter_meta *meta = ctx->meta;
	struct seq_file *seq = meta->seq;	/* typed: the seq helpers want it */
	char name[DMA_BUF_NAME_LEN], exp[16];
	const char *pname, *pexp;
	__u64 ino, size;

	if (!dmabuf)
		return 0;
	__builtin_memset(name, 0, sizeof(name));
	__builtin_memset(exp, 0, sizeof(exp));
	name[0] = '-';
	exp[0] = '?';
	shows++;
	if (BPF_CORE_READ(seq, count) == 0)
		fills++;

	ino = BPF_CORE_READ(dmabuf, file, f_inode, i_ino);
	size = BPF_CORE_READ(dmabuf, size);
	pexp = BPF_CORE_READ(dmabuf, exp_name);
	pname = BPF_CORE_READ(dmabuf, name);
	if (pexp)
		bpf_probe_read_kernel_str(exp, sizeof(exp), pexp);
	if (pname)
		bpf_probe_read_kernel_str(name, sizeof(name), pname);

	if (ino == eagain_ino && !eagain_done) {
		eagain_done = 1;
		return 1;	/* the iterator retries this buffer */
	}
	if (ino == big_ino) {
		/* 40 KiB for one buffer: more than bpf_seq_read's 32 KiB */
		for (int i = 0; i < 10; i++)
			bpf_seq_write(seq, filler, sizeof(filler));
	}

	/* seq_num: this line's index in the session, name last (no spaces) */
	BPF_SEQ_PRINTF(seq, "%llu %llu %llu %s %s\n", BPF_CORE_READ(meta, seq_num),
		       ino, size, exp, name);
	return 0;
}

SEC("syscall")
int dmabuf_walk(void *ctx)
{
	struct bpf_iter_dmabuf it;
	struct dma_buf *dmabuf;

	oc_count = oc_bytes = oc_named = 0;
	oc_err = bpf_iter_dmabuf_new(&it);
	while ((dmabuf = bpf_iter_dmabuf_next(&it))) {
		oc_count++;
		oc_bytes += BPF_CORE_READ(dmabuf, size);
		if (BPF_CORE_READ(dmabuf, name))
			oc_named++;
	}
	bpf_iter_dmabuf_destroy(&it);
	return 0;
}
