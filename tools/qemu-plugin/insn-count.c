// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * insn-count: a QEMU TCG plugin that counts the instructions the guest
 * executes between two marker instructions, split into kernel and user
 * mode, over all vCPUs.  For `make bench` (scripts/bench, BENCH_INSNS=1):
 * dmabuf-rw-bench --mark-window executes the start marker when its
 * measured window opens and the stop marker when it closes, and the
 * plugin logs one line per window:
 *
 *	insn-count: window=N kernel=K user=U
 *
 * through QEMU's log (-d plugin -D FILE).  The markers are instructions
 * that do nothing and that compilers do not emit: xchg %rcx,%rcx (start,
 * 48 87 c9) and xchg %rdx,%rdx (stop, 48 87 d2).
 *
 * Counting: every translated block gets an execution callback that adds
 * its instruction count to its vCPU's counter of its mode (the block's
 * address: the upper half is the kernel's), so vCPUs never share a
 * counter.  A block left early (an exception or interrupt in its middle)
 * counts whole: an error of a few instructions per interrupt.  The
 * window's figure is the sum over all vCPUs of the counters' growth
 * between the markers, read from the vCPU that runs the marker (another
 * vCPU's counter may be a block behind).
 *
 * With symbols=FILE (the kernel's System.map, a kernel without KASLR),
 * the plugin also counts the kernel's instructions per function (the
 * text symbol at or below each block's address; a block that runs into
 * the next function counts to the first) and logs, after each window's
 * line, every function with at least 0.1 % of the window's kernel
 * instructions:
 *
 *	insn-prof: window=N fn=NAME insns=K
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

struct vcpu_count {
	uint64_t insns[2];		/* user, kernel */
} __attribute__((aligned(64)));	/* one cache line per vCPU */

static struct vcpu_count *counts;
static int max_vcpus;
static uint64_t window_start[2];
static unsigned long window;
static bool in_window;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* symbols=: the kernel's text symbols, sorted, and per-vCPU counters */
struct symbol {
	uint64_t addr;
	char *name;
};
static struct symbol *syms;
static size_t nsyms;
static uint64_t **fn_counts;	/* [vcpu][symbol] */
static uint64_t *fn_start;	/* sum over vCPUs at the window's start */

static const uint8_t mark_start[] = { 0x48, 0x87, 0xc9 };
static const uint8_t mark_stop[] = { 0x48, 0x87, 0xd2 };

static void sum(uint64_t out[2])
{
	out[0] = out[1] = 0;
	for (int i = 0; i < max_vcpus; i++) {
		out[0] += __atomic_load_n(&counts[i].insns[0], __ATOMIC_RELAXED);
		out[1] += __atomic_load_n(&counts[i].insns[1], __ATOMIC_RELAXED);
	}
}

static void tb_exec(unsigned int vcpu, void *udata)
{
	uintptr_t v = (uintptr_t)udata;

	if (vcpu < (unsigned int)max_vcpus)
		__atomic_store_n(&counts[vcpu].insns[v & 1],
				 counts[vcpu].insns[v & 1] + (v >> 1),
				 __ATOMIC_RELAXED);
}

/* Profile: udata is the symbol's index, shifted, with the block's size. */
static void tb_exec_prof(unsigned int vcpu, void *udata)
{
	uintptr_t v = (uintptr_t)udata;
	size_t fn = v >> 16, n = v & 0xffff;

	if (vcpu >= (unsigned int)max_vcpus)
		return;
	__atomic_store_n(&counts[vcpu].insns[1], counts[vcpu].insns[1] + n,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&fn_counts[vcpu][fn], fn_counts[vcpu][fn] + n,
			 __ATOMIC_RELAXED);
}

static uint64_t fn_sum(size_t fn)
{
	uint64_t n = 0;

	for (int i = 0; i < max_vcpus; i++)
		n += __atomic_load_n(&fn_counts[i][fn], __ATOMIC_RELAXED);
	return n;
}

static void on_start(unsigned int vcpu, void *udata)
{
	pthread_mutex_lock(&lock);
	sum(window_start);
	for (size_t fn = 0; fn < nsyms; fn++)
		fn_start[fn] = fn_sum(fn);
	in_window = true;
	pthread_mutex_unlock(&lock);
}

static void dump_profile(uint64_t kernel)
{
	char line[512];

	for (size_t fn = 0; fn < nsyms; fn++) {
		uint64_t n = fn_sum(fn) - fn_start[fn];

		if (!n || n * 1000 < kernel)
			continue;
		snprintf(line, sizeof(line), "insn-prof: window=%lu fn=%s insns=%" PRIu64 "\n",
			 window, syms[fn].name, n);
		qemu_plugin_outs(line);
	}
}

static void on_stop(unsigned int vcpu, void *udata)
{
	uint64_t now[2];
	char line[128];

	pthread_mutex_lock(&lock);
	if (in_window) {
		sum(now);
		snprintf(line, sizeof(line),
			 "insn-count: window=%lu kernel=%" PRIu64 " user=%" PRIu64 "\n",
			 ++window, now[1] - window_start[1],
			 now[0] - window_start[0]);
		qemu_plugin_outs(line);
		if (nsyms)
			dump_profile(now[1] - window_start[1]);
	}
	in_window = false;
	pthread_mutex_unlock(&lock);
}

static bool is_insn(struct qemu_plugin_insn *insn, const uint8_t *bytes,
		    size_t len)
{
	return qemu_plugin_insn_size(insn) == len &&
	       !memcmp(qemu_plugin_insn_data(insn), bytes, len);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
	bool kernel = vaddr >> 63;

	if (kernel && nsyms && vaddr >= syms[0].addr && n < 0x10000) {
		size_t lo = 0, hi = nsyms;

		while (hi - lo > 1) {
			size_t mid = lo + (hi - lo) / 2;

			if (syms[mid].addr <= vaddr)
				lo = mid;
			else
				hi = mid;
		}
		qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec_prof,
						     QEMU_PLUGIN_CB_NO_REGS,
						     (void *)(uintptr_t)(lo << 16 | n));
		return;
	}
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
					     (void *)(uintptr_t)(n << 1 | kernel));
	if (kernel)
		return;
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);

		if (is_insn(insn, mark_start, sizeof(mark_start)))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start,
							       QEMU_PLUGIN_CB_NO_REGS, NULL);
		else if (is_insn(insn, mark_stop, sizeof(mark_stop)))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop,
							       QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

static int by_addr(const void *a, const void *b)
{
	const struct symbol *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* The text symbols of a System.map ("ADDR t|T|W NAME" lines). */
static int load_symbols(const char *path)
{
	char name[256], type;
	unsigned long long addr;
	size_t cap = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "insn-count: cannot open %s\n", path);
		return -1;
	}
	while (fscanf(f, "%llx %c %255s", &addr, &type, name) == 3) {
		if (type != 't' && type != 'T' && type != 'W' && type != 'w')
			continue;
		if (nsyms == cap) {
			cap = cap ? 2 * cap : 65536;
			syms = realloc(syms, cap * sizeof(*syms));
			if (!syms)
				return -1;
		}
		syms[nsyms].addr = addr;
		syms[nsyms].name = strdup(name);
		if (!syms[nsyms++].name)
			return -1;
	}
	fclose(f);
	if (!nsyms) {
		fprintf(stderr, "insn-count: no text symbols in %s\n", path);
		return -1;
	}
	qsort(syms, nsyms, sizeof(*syms), by_addr);
	fn_start = calloc(nsyms, sizeof(*fn_start));
	fn_counts = calloc(max_vcpus, sizeof(*fn_counts));
	if (!fn_start || !fn_counts)
		return -1;
	for (int i = 0; i < max_vcpus; i++) {
		fn_counts[i] = calloc(nsyms, sizeof(**fn_counts));
		if (!fn_counts[i])
			return -1;
	}
	return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
					   const qemu_info_t *info,
					   int argc, char **argv)
{
	if (strcmp(info->target_name, "x86_64")) {
		fprintf(stderr, "insn-count: x86_64 guests only, not %s\n",
			info->target_name);
		return -1;
	}
	max_vcpus = info->system_emulation ? info->system.max_vcpus : 1;
	counts = calloc(max_vcpus, sizeof(*counts));
	if (!counts)
		return -1;
	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "symbols=", 8)) {
			if (load_symbols(argv[i] + 8))
				return -1;
		} else {
			fprintf(stderr, "insn-count: unknown argument %s\n", argv[i]);
			return -1;
		}
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	return 0;
}
