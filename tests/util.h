/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the dmabuf-rw guest tests.
 */
#ifndef DMABUFRW_TEST_UTIL_H
#define DMABUFRW_TEST_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The emulated NVMe namespace the VM runner attaches. */
#define NVME_DEV	"/dev/nvme0n1"

/*
 * A pattern that differs for every 8-byte word, every disk offset and every
 * seed, so a misplaced, stale or partial transfer is always detected.
 */
static inline uint64_t pattern_word(uint64_t seed, uint64_t pos)
{
	uint64_t x = seed ^ (pos * 0x9e3779b97f4a7c15ULL);

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return x;
}

/* Fill @len bytes (multiple of 8) as they should sit at disk offset @pos. */
static inline void pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t pos)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = pattern_word(seed, pos + i * 8);
}

/* Byte offset of the first mismatch, or -1 when @buf holds the pattern. */
static inline long pattern_check(const void *buf, size_t len, uint64_t seed, uint64_t pos)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pattern_word(seed, pos + i * 8))
			return (long)(i * 8);
	return -1;
}

static inline double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read a small sysfs or proc file into @buf; returns its length or -1. */
static inline int read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY), n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return n;
}

#endif
