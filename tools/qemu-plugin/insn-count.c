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

static void on_start(unsigned int vcpu, void *udata)
{
	pthread_mutex_lock(&lock);
	sum(window_start);
	in_window = true;
	pthread_mutex_unlock(&lock);
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
	bool kernel = qemu_plugin_tb_vaddr(tb) >> 63;

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
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	return 0;
}
