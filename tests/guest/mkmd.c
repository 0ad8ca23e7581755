// SPDX-License-Identifier: GPL-2.0
/*
 * mkmd: build and start an md array without superblocks over block
 * devices, as tests/stack.h does for the tests, for the guest init (the
 * benchmark's md RAID0 targets); busybox has no mdadm.
 *
 *   mkmd LEVEL CHUNK_KIB DEVICE...   build one; prints its device node
 *                                    (a redundant level zeroes the
 *                                    devices first, see md_create())
 *   mkmd -S ARRAY                    stop it (the data stay on the devices)
 */
#include <stdio.h>
#include <stdlib.h>

#include "stack.h"

int main(int argc, char **argv)
{
	dev_t devs[16];
	struct md_array md;
	int i, n = argc - 3, err;

	if (argc == 3 && !strcmp(argv[1], "-S")) {
		md.fd = open(argv[2], O_RDWR);
		if (md.fd < 0 || md_stop(&md)) {
			fprintf(stderr, "mkmd: stop %s: %s\n", argv[2], strerror(errno));
			return 1;
		}
		return 0;
	}
	if (argc < 4 || n > 16) {
		fprintf(stderr, "usage: mkmd LEVEL CHUNK_KIB DEVICE... (at most 16) | mkmd -S ARRAY\n");
		return 2;
	}
	for (i = 0; i < n; i++) {
		devs[i] = blk_devt(argv[3 + i]);
		if (!devs[i]) {
			fprintf(stderr, "mkmd: %s: not a block device\n", argv[3 + i]);
			return 1;
		}
	}
	err = md_create(&md, atoi(argv[1]), devs, n, atoi(argv[2]) * 1024);
	if (err) {
		fprintf(stderr, "mkmd: %s\n", strerror(-err));
		return 1;
	}
	close(md.fd);
	printf("%s\n", md.path);
	return 0;
}
