# dmabuf-rw: dma-buf read/write via io_uring.
#
#   make demo            boot the test VM and run the demo
#   make test            build everything and run the tests (TAP)
#   make tree            kernel work tree build/linux = source + series
#   make export          write kernel/patches/ from the work tree
#   make series-status   fail if the work tree has unexported work
#   make check-groups    each group of the series applies and compiles alone
#   make check-bisect    every commit of the series compiles
#   make kernel          build the debug (test) kernel
#   make kernel-base     build the base (benchmark) kernel
#   make kernel-bpf      build the bpf kernel (BTF, for the dmabuf iterator test)
#   make tools           build the static guest programs
#   make deb             Debian packages for a real machine in build/deb/:
#                        the userspace (library, header, pkg-config file,
#                        man pages, dmabuf-rw, demo, benchmark) and the
#                        patched kernel of Debian's own 7.2 configuration
#                        (hours on 2 cores; README "On a real machine")
#   make deb-rig         the userspace package and the kernel package of the
#                        rig's configuration, which make test boots
#   make deb-boot        boot the kernel package of make deb in the VM and
#                        run tests/list-distro on it (minutes)
#   make shell           boot the test VM with a shell on the console
#   make soak            migration storm under I/O for SOAK_SECONDS (600)
#   make bench           benchmark: base kernel, one boot per IOMMU mode,
#                        table, CSV and plot in build/bench/
#   make bench-quick     the same, strict IOMMU only, one repeat
#   make bench-full      the full plan (BENCH_PLAN=full: 1-16 MiB transfers
#                        at QD 1, 4 and 16 on every target; hours)
#   make bench-profile   the benchmark on the profile kernel (ftrace function
#                        profiler): kernel calls per I/O of each buffer kind
#
# KERNEL_SRC=/path uses your own vanilla v7.2 tree instead of Debian's
# linux-source-7.2.  IOMMU=strict|lazy|pt|none picks the mode of `make demo`
# and `make shell`, DEVMEM=switch|root adds device memory to the demo;
# TEST_IOMMU_MODES the modes `make test` boots; BENCH_*
# (see scripts/bench) the plan of `make bench`.

SHELL := /bin/bash
TOP := $(CURDIR)
BUILD := $(TOP)/build
TREE := $(BUILD)/linux
GUEST := $(BUILD)/guest
IOMMU ?= strict

CC := gcc
USER_CFLAGS := -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-static -I$(TOP)/tools/lib -I$(TOP)/tests
HARNESS := -I$(TREE)/tools/testing/selftests -I$(TREE)/drivers/dma-buf
LIB_SRC := tools/lib/dmabufrw.c
LIB_HDR := tools/lib/dmabufrw.h
TESTS := $(shell cat tests/list tests/list-bpf)
TEST_BINS := $(addprefix $(GUEST)/tests/,$(TESTS))
TOOL_BINS := $(GUEST)/tools/dmabuf-rw $(GUEST)/tools/dmabuf-rw-demo \
	$(GUEST)/tools/dmabuf-rw-bench
# the rig's own helpers in the guest (the benchmark's md arrays)
RIG_BINS := $(GUEST)/tools/mkmd

.PHONY: all deps tree export series-status kernel kernel-base kernel-bpf tools \
	initramfs initramfs-base initramfs-bpf initramfs-deb initramfs-distro deb deb-tools deb-rig deb-boot test demo shell bench bench-quick bench-full bench-profile kernel-profile checkpatch \
	check-configs check-groups check-bisect \
	clean distclean

# The kernel builds run their own parallel jobs, and two of them at once
# would fight over the two cores: make itself runs one target at a time,
# whatever -j says.
.NOTPARALLEL:

all: kernel tools initramfs

deps:
	@scripts/install-deps

tree: deps
	@scripts/tree make

export:
	@scripts/tree export

series-status:
	@scripts/tree status

kernel: tree
	@scripts/build-kernel debug

kernel-base: tree
	@scripts/build-kernel base

kernel-bpf: tree
	@scripts/build-kernel bpf

kernel-profile: tree
	@scripts/build-kernel profile

tools: $(TEST_BINS) $(TOOL_BINS) $(RIG_BINS)

$(GUEST)/tools/mkmd: tests/guest/mkmd.c tests/stack.h tests/util.h $(LIB_SRC) $(LIB_HDR) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -o $@ $< $(LIB_SRC) -luring

$(GUEST)/tests/%: tests/%.c tests/util.h tests/texp.h tests/stack.h $(LIB_SRC) $(LIB_HDR) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) $(HARNESS) -o $@ $< $(LIB_SRC) -luring -lpthread

# The dmabuf iterator test: its BPF object (clang, bpf target, CO-RE against
# the running kernel's BTF) is embedded as a bpftool skeleton; libbpf and its
# libelf/zlib/zstd are linked statically like everything in the guest.
BPF_CLANG ?= clang
BPFTOOL ?= $(or $(shell command -v bpftool),/usr/sbin/bpftool)
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror \
	-I/usr/include/$(shell $(CC) -dumpmachine)

$(GUEST)/bpf/%.bpf.o: tests/%.bpf.c | tree
	@mkdir -p $(@D)
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

.PRECIOUS: $(GUEST)/bpf/%.bpf.o

$(GUEST)/bpf/%.skel.h: $(GUEST)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst .skel.h,,$(@F))_bpf > $@.tmp && mv $@.tmp $@

$(GUEST)/tests/dmabuf_iter: tests/dmabuf_iter.c $(GUEST)/bpf/dmabuf_iter.skel.h tests/util.h \
		$(LIB_SRC) $(LIB_HDR) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) $(HARNESS) -I$(GUEST)/bpf -o $@ $< $(LIB_SRC) \
		-lbpf -lelf -lz -lzstd -luring -lpthread

# iommufd's uAPI header is newer than Debian 12's linux-libc-dev: the test
# takes it, alone, from the kernel tree, and the selftest ioctls from
# drivers/iommu/iommufd/iommufd_test.h.
$(GUEST)/inc/linux/iommufd.h: $(TREE)/include/uapi/linux/iommufd.h
	@mkdir -p $(@D)
	cp $< $@

$(GUEST)/tests/iommufd_dmabuf: tests/iommufd_dmabuf.c tests/util.h tests/texp.h \
		$(GUEST)/inc/linux/iommufd.h $(TREE)/drivers/iommu/iommufd/iommufd_test.h | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -I$(GUEST)/inc $(HARNESS) -I$(TREE)/drivers -o $@ $< -lpthread

# The kernel's own selftests of the subsystems the series touches, from the
# patched tree, built statically against its exported uAPI headers (make
# headers in an object directory of their own).  Named kselftest-* among
# the guest's test programs (tests/list).
KHDR := $(BUILD)/obj-headers/usr/include
KSFT := $(TREE)/tools/testing/selftests
KSFT_CFLAGS := -static -O2 -g -Wall -Wno-unused-function -isystem $(KHDR) \
	-I$(KSFT)

$(KHDR)/.stamp: $(wildcard kernel/patches/*/*.patch) | tree
	@mkdir -p $(BUILD)/obj-headers
	$(MAKE) -s -C $(TREE) O=$(BUILD)/obj-headers ARCH=x86_64 headers
	@touch $@

# The device-memory test imports into vgem through the DRM uAPI, which
# Debian 12's linux-libc-dev does not ship: from the exported headers,
# searched after the system's.
$(GUEST)/tests/dmabuf_devmem: tests/dmabuf_devmem.c tests/util.h tests/texp.h \
		$(LIB_SRC) $(LIB_HDR) $(KHDR)/.stamp | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) $(HARNESS) -idirafter $(KHDR) -o $@ $< $(LIB_SRC) -luring -lpthread

# vfio-pci's dma-buf export (VFIO_DEVICE_FEATURE_DMA_BUF) is newer than
# Debian 12's linux-libc-dev too: from the tree's exported headers.
$(GUEST)/inc/linux/vfio.h: $(KHDR)/.stamp
	@mkdir -p $(@D)
	cp $(KHDR)/linux/vfio.h $@

$(GUEST)/tests/dmabuf_vfio: tests/dmabuf_vfio.c $(GUEST)/inc/linux/vfio.h tests/util.h \
		$(LIB_SRC) $(LIB_HDR) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -I$(GUEST)/inc $(HARNESS) -o $@ $< $(LIB_SRC) -luring -lpthread

$(GUEST)/tests/kselftest-udmabuf: $(KHDR)/.stamp
	@mkdir -p $(@D)
	$(CC) $(KSFT_CFLAGS) -o $@ $(KSFT)/drivers/dma-buf/udmabuf.c

$(GUEST)/tests/kselftest-dmabuf-heaps: $(KHDR)/.stamp
	@mkdir -p $(@D)
	$(CC) $(KSFT_CFLAGS) -o $@ $(KSFT)/dmabuf-heaps/dmabuf-heap.c

$(GUEST)/tests/kselftest-iommufd: $(KHDR)/.stamp
	@mkdir -p $(@D)
	$(CC) $(KSFT_CFLAGS) -D_GNU_SOURCE -o $@ $(KSFT)/iommu/iommufd.c -lcap

# The demo and the benchmark take the test exporter's uAPI header from the
# tree: built again when the series changes.
$(GUEST)/tools/dmabuf-rw-demo: tools/demo/dmabuf-rw-demo.c $(LIB_SRC) $(LIB_HDR) \
		$(wildcard kernel/patches/*/*.patch) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -I$(TREE)/drivers/dma-buf -o $@ $< $(LIB_SRC) -luring

# The command line tool: check and stat (tools/cli/dmabuf-rw.c).
$(GUEST)/tools/dmabuf-rw: tools/cli/dmabuf-rw.c $(LIB_SRC) $(LIB_HDR) \
		$(wildcard kernel/patches/*/*.patch) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -I$(TREE)/drivers/dma-buf -o $@ $< $(LIB_SRC) -luring

$(GUEST)/tools/dmabuf-rw-bench: tools/bench/dmabuf-rw-bench.c $(LIB_SRC) $(LIB_HDR) \
		$(wildcard kernel/patches/*/*.patch) | tree
	@mkdir -p $(@D)
	$(CC) $(USER_CFLAGS) -I$(TREE)/drivers/dma-buf -o $@ $< $(LIB_SRC) -luring -lpthread -lm

# The initramfs packs the kernel's modules: built after the kernel.
initramfs: kernel tools
	@scripts/mk-initramfs debug

initramfs-base: kernel-base tools
	@scripts/mk-initramfs base

initramfs-bpf: kernel-bpf tools
	@scripts/mk-initramfs bpf

# The packages (scripts/build-deb).  The userspace package builds its
# tools against the tree's test exporter header, as the guest's do.
deb-tools: tree
	@scripts/build-deb tools

deb-rig: deb-tools
	@scripts/build-deb rig

deb: deb-tools
	@scripts/build-deb distro

# The packaged kernel's image and modules, unpacked, with the guest tests.
initramfs-deb: deb-rig tools
	@scripts/mk-initramfs deb

test: kernel initramfs kernel-bpf initramfs-bpf initramfs-deb
	@scripts/run-tests

# The distribution kernel's package of `make deb` (not built here: hours)
# booted in the VM under the strict IOMMU, with the guest programs of
# tests/list-distro on its image and its own modules (scripts/deb-boot).
initramfs-distro: tools
	@scripts/mk-initramfs distro

deb-boot: initramfs-distro
	@scripts/deb-boot

# DEVMEM=switch|root adds device memory (scripts/run-vm --devmem): behind
# the switch the IOMMU mode is none unless IOMMU says pt (a translating
# IOMMU model in QEMU drops peer-to-peer DMA, README), and the host checks
# the BAR's backing file for what the NVMe controller wrote.
DEVMEM ?=
ifeq ($(DEVMEM)$(origin IOMMU),switchfile)
demo: IOMMU := none
endif
demo: kernel initramfs
	@case "$(DEVMEM):$(IOMMU)" in switch:strict|switch:lazy) \
	  echo "DEVMEM=switch: IOMMU=none or pt (QEMU's IOMMU model drops peer-to-peer DMA)" >&2; exit 2 ;; \
	 :*|switch:*|root:*) ;; *) echo "DEVMEM: switch or root" >&2; exit 2 ;; esac; \
	 vm=$(BUILD)/vm/debug-$(IOMMU)-demo; \
	 scripts/run-vm --mode demo --iommu $(IOMMU) $(if $(DEVMEM),--devmem $(DEVMEM)) \
	  --timeout 600 --out $$vm; rc=$$?; \
	 sed -e 's/\r$$//' -e '/^@@@ /d' $$vm/results.txt; \
	 check=$$(tr -d '\r' < $$vm/results.txt | sed -n 's/^devmem-host-check: //p'); \
	 if [ $$rc -eq 0 ] && [ -n "$$check" ]; then \
	  echo "host: the BAR's backing file, read outside the guest:"; \
	  scripts/check-devmem $$vm/devmem.img $$check || rc=1; \
	 elif [ $$rc -eq 0 ] && [ "$(DEVMEM)" = switch ]; then \
	  echo "host: the guest moved no data to device memory (no devmem-host-check line)" >&2; rc=1; \
	 fi; exit $$rc

shell: kernel initramfs
	@scripts/run-vm --mode shell --iommu $(IOMMU)

# Migration storm for SOAK_SECONDS (default 600) with its figures; see
# scripts/soak for SOAK_IOMMU and SOAK_EXPORTER.
.PHONY: soak
soak: kernel initramfs
	@scripts/soak

# The initramfs packs the base kernel's modules: built after the kernel.
# BENCH_FLAVOUR=bpf: the kernel with trace events (scripts/bench).
BENCH_FLAVOUR ?= base
bench: kernel-$(BENCH_FLAVOUR) tools
	@scripts/mk-initramfs $(BENCH_FLAVOUR)
	@BENCH_FLAVOUR=$(BENCH_FLAVOUR) scripts/bench

# The benchmark under the ftrace function profiler: calls per I/O of each
# path (see scripts/bench, BENCH_PROFILE).
bench-profile: kernel-profile tools
	@scripts/mk-initramfs profile
	@BENCH_FLAVOUR=base BENCH_PROFILE=1 scripts/bench

bench-quick: kernel-$(BENCH_FLAVOUR) tools
	@scripts/mk-initramfs $(BENCH_FLAVOUR)
	@BENCH_FLAVOUR=$(BENCH_FLAVOUR) BENCH_MODES="$${BENCH_MODES:-strict}" \
	 BENCH_REPEATS="$${BENCH_REPEATS:-1}" scripts/bench

bench-full: kernel-$(BENCH_FLAVOUR) tools
	@scripts/mk-initramfs $(BENCH_FLAVOUR)
	@BENCH_FLAVOUR=$(BENCH_FLAVOUR) BENCH_PLAN=full scripts/bench

checkpatch: tree
	@scripts/checkpatch-series

# The series in the configurations the rig's kernels do not cover (no
# dma-buf framework, no io_uring, i386); make test runs it too.
check-configs: tree
	@scripts/check-configs

# Each group of kernel/patches applies and compiles with only the groups
# it needs (kernel/patches/series); every commit compiles (BISECT_OBJECTS=1:
# the C files touched so far; without it, the whole debug kernel at each
# commit, hours).  Both use the work tree, which must be clean.
check-groups: tree
	@scripts/check-groups

check-bisect: tree
	@BISECT_OBJECTS=$${BISECT_OBJECTS:-1} scripts/check-bisect

clean:
	rm -rf $(GUEST) $(BUILD)/vm $(BUILD)/initramfs-* $(BUILD)/bench

distclean:
	rm -rf $(BUILD)
