// SPDX-License-Identifier: GPL-2.0
/*
 * The command line tool, dmabuf-rw (tools/cli/dmabuf-rw.c), as a user runs
 * it: `check` says yes with the path for the buffers and targets the
 * series serves, and the exact refusal and errno for those it does not;
 * `stat` prints a running process's dma-buf slots.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <liburing.h>
#include "kselftest_harness.h"
#include "util.h"
#include "texp.h"
#include "dmabufrw.h"

#define MiB		(1024UL * 1024)

/* Run a command, its stdout into @out; returns its exit status or -1. */
static int run(char *out, size_t size, const char *fmt, ...)
{
	char cmd[512];
	size_t len = 0;
	va_list ap;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (len < size - 1 && fgets(out + len, size - len, p))
		len += strlen(out + len);
	out[len] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Does the JSON report @out have "key": "value..." (a prefix of the value)? */
static bool has(const char *out, const char *key, const char *prefix)
{
	char want[320];

	snprintf(want, sizeof(want), "\"%.40s\": \"%.250s", key, prefix);
	return strstr(out, want) != NULL;
}

#define EXPECT_HAS(out, key, prefix) \
	EXPECT_TRUE(has(out, key, prefix)) TH_LOG("no \"%s\": \"%s...\" in %s", key, prefix, out)

static const char *iommu_word(void)
{
	const char *mode = getenv("dmabufrw_iommu");

	/* the IOMMU domain type the kernel names for each boot */
	if (!mode || !strcmp(mode, "none"))
		return "none";
	if (!strcmp(mode, "strict"))
		return "DMA (strict";
	if (!strcmp(mode, "lazy"))
		return "DMA-FQ";
	return "identity";
}

FIXTURE(check) {
	char out[8192];
};

FIXTURE_SETUP(check)
{
	REQUIRE_DMABUF_IO();
	if (access("/tools/dmabuf-rw", X_OK))
		SKIP(return, "no /tools/dmabuf-rw in this guest");
}

FIXTURE_TEARDOWN(check)
{
}

/* udmabuf and the system heap: yes, verified, with the path. */
TEST_F(check, says_udmabuf_and_heap_buffers_work_on_the_namespace)
{
	static const char *const sources[] = { "udmabuf", "heap" };

	for (int i = 0; i < 2; i++) {
		EXPECT_EQ(0, run(self->out, sizeof(self->out),
				 "dmabuf-rw check --json --source %s %s", sources[i],
				 NVME_DEV)) TH_LOG("%s", self->out);
		EXPECT_HAS(self->out, "result", "ok");
		EXPECT_HAS(self->out, "registered", "yes");
		EXPECT_HAS(self->out, "verified", "yes");
		EXPECT_HAS(self->out, "memory", "system memory");
		EXPECT_HAS(self->out, "iommu", iommu_word());
		EXPECT_HAS(self->out, "data_pointer", "");
		EXPECT_NE(NULL, strstr(self->out, "\"io_bytes\": 65536"))
			TH_LOG("%s", self->out);
		EXPECT_NE(NULL, strstr(self->out, "\"mapping_ranges\": "))
			TH_LOG("%s", self->out);
	}
	/* behind an IOMMU the buffer is one DMA range */
	if (strcmp(iommu_word(), "none"))
		EXPECT_NE(NULL, strstr(self->out, "\"mapping_ranges\": 1,"))
			TH_LOG("%s", self->out);

	/* and the text form says the same */
	EXPECT_EQ(0, run(self->out, sizeof(self->out), "dmabuf-rw check %s", NVME_DEV));
	EXPECT_NE(NULL, strstr(self->out, "result           ok\n")) TH_LOG("%s", self->out);
	/* in the log, for whoever reads it */
	TH_LOG("dmabuf-rw check %s:\n%s", NVME_DEV, self->out);
}

/* A file of ext4: yes; the same file opened without O_DIRECT: EINVAL. */
TEST_F(check, says_ext4_files_work_and_refuses_buffered_ones_with_einval)
{
	char path[] = EXT4_MNT "/check-probe";
	void *p;
	int fd, ret;

	ret = mount_ns(3, 1, "ext4", EXT4_MNT, NULL);
	ASSERT_EQ(0, ret) TH_LOG("mount: %s", strerror(-ret));
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, posix_memalign(&p, 4096, 65536));
	pattern_fill(p, 65536, 0xc4ec, 0);
	ASSERT_EQ(65536, pwrite(fd, p, 65536, 0));
	close(fd);
	free(p);

	EXPECT_EQ(0, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json %s", path)) TH_LOG("%s", self->out);
	EXPECT_HAS(self->out, "result", "ok");
	EXPECT_HAS(self->out, "filesystem", "ext4");
	EXPECT_HAS(self->out, "verified", "yes");

	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json --buffered %s", path)) TH_LOG("%s", self->out);
	EXPECT_HAS(self->out, "result", "refused");
	EXPECT_HAS(self->out, "step", "register");
	EXPECT_HAS(self->out, "errno", "EINVAL");
	EXPECT_HAS(self->out, "reason", "the target is not open for direct I/O");
	TH_LOG("%s", self->out);

	unlink(path);
	EXPECT_EQ(0, umount_busy(EXT4_MNT));
}

/* tmpfs takes O_DIRECT but no dma-buf registration: EOPNOTSUPP. */
TEST_F(check, refuses_a_file_system_without_support_with_eopnotsupp)
{
	char path[] = "/tmp/check-probe";
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ftruncate(fd, 65536));
	close(fd);
	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json %s", path)) TH_LOG("%s", self->out);
	EXPECT_HAS(self->out, "result", "refused");
	EXPECT_HAS(self->out, "step", "register");
	EXPECT_HAS(self->out, "errno", "EOPNOTSUPP");
	EXPECT_HAS(self->out, "reason", "tmpfs does not take dma-buf registrations");
	TH_LOG("%s", self->out);
	unlink(path);
}

/*
 * `check` with the device memory of @source: peer to peer and verified
 * behind the rig's PCIe switch; on the root bus, where QEMU has no
 * peer-to-peer path, EOPNOTSUPP at the registration and why.
 */
static void check_devmem(struct __test_metadata *_metadata, char *out,
			 size_t size, const char *source, bool p2p)
{
	EXPECT_EQ(p2p ? 0 : 1, run(out, size, "dmabuf-rw check --json --source %s %s",
				   source, NVME_DEV)) TH_LOG("%s", out);
	if (p2p) {
		EXPECT_HAS(out, "result", "ok");
		EXPECT_HAS(out, "memory", "device memory");
		EXPECT_HAS(out, "verified", "yes");
	} else {
		EXPECT_HAS(out, "result", "refused");
		EXPECT_HAS(out, "step", "register");
		EXPECT_HAS(out, "errno", "EOPNOTSUPP");
		EXPECT_HAS(out, "reason", "the exporter cannot map this buffer");
	}
	TH_LOG("%s", out);
}

/* The test exporter's buffers in device memory. */
TEST_F(check, says_where_device_memory_can_go_peer_to_peer)
{
	bool p2p;

	REQUIRE_DEVMEM(p2p);
	check_devmem(_metadata, self->out, sizeof(self->out), "texp-devmem", p2p);
}

/*
 * vfio-pci's export of a BAR (vfio:PCI[:BAR], the rig's second
 * ivshmem-plain): data verified through the device fd behind the switch,
 * EOPNOTSUPP with the P2P reason on the root bus.  A BAR smaller than the
 * buffer is refused with EINVAL, and a device on another driver (the NVMe
 * controller) with ENODEV, both before anything is exported.
 */
TEST_F(check, says_where_a_vfio_bar_can_go_and_why_not)
{
	char name[64], source[80], ctrl[64], path[128], link[300];
	ssize_t n;
	bool p2p;

	REQUIRE_DEVMEM(p2p);
	ASSERT_EQ(0, pci_bound_to("vfio-pci", name, sizeof(name)))
		TH_LOG("no device bound to vfio-pci");
	snprintf(source, sizeof(source), "vfio:%s", name);
	check_devmem(_metadata, self->out, sizeof(self->out), source, p2p);
	/* by default the largest prefetchable BAR: ivshmem-plain's memory */
	EXPECT_NE(NULL, strstr(self->out, "\"bar\": 2,")) TH_LOG("%s", self->out);

	/* BAR 0 of ivshmem-plain is its 256-byte register block */
	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json --source vfio:%s:0 %s", name, NVME_DEV));
	EXPECT_HAS(self->out, "step", "source");
	EXPECT_HAS(self->out, "errno", "EINVAL");
	EXPECT_HAS(self->out, "reason", "BAR 0 of ");
	/* a BAR that is not a number */
	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json --source vfio:%s: %s", name, NVME_DEV));
	EXPECT_HAS(self->out, "errno", "EINVAL");
	EXPECT_HAS(self->out, "reason", "vfio:");

	nvme_disk_ctrl(nvme_name(), ctrl, sizeof(ctrl));
	snprintf(path, sizeof(path), "/sys/class/nvme/%s/device", ctrl);
	n = readlink(path, link, sizeof(link) - 1);
	ASSERT_LT(0, n);
	link[n] = 0;
	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json --source vfio:%s %s",
			 strrchr(link, '/') + 1, NVME_DEV));
	EXPECT_HAS(self->out, "step", "source");
	EXPECT_HAS(self->out, "errno", "ENODEV");
	EXPECT_NE(NULL, strstr(self->out, "is bound to nvme, not to vfio-pci"))
		TH_LOG("%s", self->out);
	TH_LOG("%s", self->out);
}

/*
 * A kernel without the series says so.  The rig boots only patched
 * kernels, so this case can only be run by hand on another kernel.
 */
TEST_F(check, says_a_kernel_without_the_series_lacks_it)
{
	if (kernel_has_dmabuf_io())
		SKIP(return, "the rig boots no kernel without the series");
	EXPECT_EQ(1, run(self->out, sizeof(self->out),
			 "dmabuf-rw check --json %s", NVME_DEV));
	EXPECT_HAS(self->out, "step", "kernel");
	EXPECT_HAS(self->out, "errno", "EOPNOTSUPP");
}

/* stat reads a live process's slots from its rings' fdinfo. */
TEST_F(check, stat_prints_a_running_rings_dmabuf_slots)
{
	struct io_uring ring;
	char cmd[64];
	int memfd, dbuf, fd;

	dbuf = dmabufrw_alloc_udmabuf(MiB, &memfd);
	ASSERT_LE(0, dbuf);
	fd = open(NVME_DEV, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, io_uring_queue_init(4, &ring, 0));
	ASSERT_EQ(0, io_uring_register_buffers_sparse(&ring, 4));

	/* no dma-buf slot yet */
	EXPECT_EQ(0, run(self->out, sizeof(self->out), "dmabuf-rw stat %d", getpid()));
	EXPECT_NE(NULL, strstr(self->out, "no dma-buf slots")) TH_LOG("%s", self->out);

	ASSERT_EQ(0, dmabufrw_register_dmabuf(&ring, 3, dbuf, fd));
	ASSERT_EQ(8192, dmabufrw_rw_fixed(&ring, false, fd, 3, 0, 8192, 0));
	EXPECT_EQ(-EFAULT, dmabufrw_rw_fixed(&ring, false, fd, 3, MiB, 4096, 0));

	snprintf(cmd, sizeof(cmd), "%d:%d", getpid(), ring.ring_fd);
	EXPECT_EQ(0, run(self->out, sizeof(self->out), "dmabuf-rw stat --json %s", cmd));
	EXPECT_NE(NULL, strstr(self->out, "\"slot\": 3,")) TH_LOG("%s", self->out);
	EXPECT_HAS(self->out, "state", "mapped");
	EXPECT_HAS(self->out, "exp", "udmabuf");
	EXPECT_HAS(self->out, "ios", "1\"");
	EXPECT_HAS(self->out, "bytes", "8192\"");
	EXPECT_HAS(self->out, "failed", "EFAULT:1\"");
	EXPECT_HAS(self->out, "file", NVME_DEV);

	EXPECT_EQ(0, run(self->out, sizeof(self->out), "dmabuf-rw stat %d", getpid()));
	EXPECT_NE(NULL, strstr(self->out, " slot 3:\n")) TH_LOG("%s", self->out);
	EXPECT_NE(NULL, strstr(self->out, "  failed         EFAULT:1\n")) TH_LOG("%s", self->out);

	/* a process without rings */
	EXPECT_EQ(1, run(self->out, sizeof(self->out), "dmabuf-rw stat 1"));

	io_uring_queue_exit(&ring);
	close(fd);
	close(dbuf);
	close(memfd);
}

TEST_HARNESS_MAIN
