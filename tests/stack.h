/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Stacked block devices for the tests: md arrays and device-mapper devices
 * assembled with the kernel's ioctls (the guest has neither mdadm nor
 * dmsetup), over the member controllers of the test VM (scripts/run-vm:
 * four controllers with one namespace each, serials dmabufrw-m0 to -m3,
 * and a two-controller subsystem, serial dmabufrw-mp, whose shared
 * namespace is an NVMe multipath head).
 */
#ifndef DMABUFRW_TEST_STACK_H
#define DMABUFRW_TEST_STACK_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/dm-ioctl.h>
#include <linux/major.h>
#include <linux/raid/md_u.h>
#include <linux/raid/md_p.h>

#include "util.h"

#define STACK_MEMBERS	4

/* The disk name of member controller @i's namespace in @name ("" if none). */
static inline void member_name(int i, char *name, size_t size)
{
	char serial[32];

	snprintf(serial, sizeof(serial), "dmabufrw-m%d", i);
	nvme_serial_ns_name(serial, 1, name, size);
}

/* The disk name of the multipath head in @name ("" if none). */
static inline void mpath_name(char *name, size_t size)
{
	nvme_serial_ns_name("dmabufrw-mp", 1, name, size);
}

/* The device number of disk (or /dev node) @path, 0 if it has none. */
static inline dev_t blk_devt(const char *path)
{
	struct stat st;

	if (stat(path, &st) || !S_ISBLK(st.st_mode))
		return 0;
	return st.st_rdev;
}

/* The device number of member @i's namespace, 0 if it has none. */
static inline dev_t member_devt(int i)
{
	char name[32], path[64];

	member_name(i, name, sizeof(name));
	snprintf(path, sizeof(path), "/dev/%s", name);
	return *name ? blk_devt(path) : 0;
}

/*
 * Zero the whole of block device @dev (BLKZEROOUT: NVMe Write Zeroes where
 * the device has it, else the kernel writes zeroes): 0 or -errno.
 */
static inline int blk_zero_devt(dev_t dev)
{
	char path[64], text[256], *name;
	uint64_t range[2] = { 0, 0 };
	int fd, err = 0;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent", major(dev),
		 minor(dev));
	if (read_text(path, text, sizeof(text)) < 0)
		return -ENODEV;
	name = strstr(text, "DEVNAME=");
	if (!name)
		return -ENODEV;
	name += strlen("DEVNAME=");
	name[strcspn(name, "\n")] = 0;
	snprintf(path, sizeof(path), "/dev/%s", name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, BLKGETSIZE64, &range[1]) ||
	    ioctl(fd, BLKZEROOUT, range))
		err = -errno;
	close(fd);
	return err;
}

/*
 * An md array: md_create() builds it without superblocks ("mdadm --build":
 * the members' data start at their first sector, nothing else is written
 * to them) and starts it; md_stop() stops it.
 */
struct md_array {
	int fd;			/* /dev/mdN, open */
	char path[32];
};

/*
 * Build and start an md array of RAID @level over the @n disks @devs with
 * chunks of @chunk bytes (RAID0, RAID5).  A redundant array is started
 * clean, so that no resync reads or writes its members behind the test's
 * back: its members are zeroed first, which makes mirrors the same and
 * parity right (other tests, and the file system scripts/run-vm puts on
 * the members, leave other bytes there).  0 or -errno.
 */
static inline int md_create(struct md_array *md, int level, const dev_t *devs,
			    int n, int chunk)
{
	mdu_array_info_t info = {
		.level = level,
		.nr_disks = n,
		.raid_disks = n,
		.not_persistent = 1,
		.state = 1 << MD_SB_CLEAN,
		.active_disks = n,
		.working_disks = n,
		.chunk_size = chunk,
	};
	char name[16];
	int i, minor, err;

	md->fd = -1;
	for (i = 0; level > 0 && i < n; i++) {
		err = blk_zero_devt(devs[i]);
		if (err)
			return err;
	}
	/* a free minor: new_array fails with EEXIST for one in use */
	for (minor = 100 + getpid() % 400;; minor++) {
		snprintf(name, sizeof(name), "md%d", minor);
		err = write_text("/sys/module/md_mod/parameters/new_array", name);
		if (!err)
			break;
		if (err != -EEXIST || minor > 1000)
			return err;
	}
	snprintf(md->path, sizeof(md->path), "/dev/%s", name);
	/* not exclusive: an array may be a member of another, or mounted */
	md->fd = open(md->path, O_RDWR);
	if (md->fd < 0)
		return -errno;
	info.md_minor = minor;
	if (ioctl(md->fd, SET_ARRAY_INFO, &info))
		goto fail;
	for (i = 0; i < n; i++) {
		mdu_disk_info_t disk = {
			.number = i,
			.raid_disk = i,
			.state = (1 << MD_DISK_SYNC) | (1 << MD_DISK_ACTIVE),
			.major = major(devs[i]),
			.minor = minor(devs[i]),
		};

		if (ioctl(md->fd, ADD_NEW_DISK, &disk))
			goto fail;
	}
	if (ioctl(md->fd, RUN_ARRAY, NULL))
		goto fail;
	return 0;
fail:
	err = -errno;
	ioctl(md->fd, STOP_ARRAY, NULL);
	close(md->fd);
	md->fd = -1;
	return err;
}

/* Stop the array and forget it: 0 or -errno. */
static inline int md_stop(struct md_array *md)
{
	int err = 0, tries;

	if (md->fd < 0)
		return 0;
	/* a registration's last reference may still be on its way out */
	for (tries = 0; ioctl(md->fd, STOP_ARRAY, NULL); tries++) {
		err = -errno;
		if (err != -EBUSY || tries > 100)
			break;
		usleep(20000);
		err = 0;
	}
	close(md->fd);
	md->fd = -1;
	return err;
}

/*
 * A device-mapper device of one table: dm_create() makes, loads and
 * resumes it; dm_remove() removes it.
 */
struct dm_dev {
	char name[32];
	char path[32];		/* /dev/dm-N */
	dev_t devt;
};

/* Prepare a dm_ioctl for @name in @buf of @size bytes. */
static inline struct dm_ioctl *dm_ioctl_init(void *buf, size_t size,
					     const char *name)
{
	struct dm_ioctl *io = buf;

	memset(buf, 0, size);
	io->version[0] = DM_VERSION_MAJOR;
	io->version[1] = 0;
	io->data_size = size;
	io->data_start = sizeof(*io);
	snprintf(io->name, sizeof(io->name), "%s", name);
	return io;
}

/* Issue dm ioctl @cmd with @io: 0 or -errno. */
static inline int dm_cmd(unsigned long cmd, struct dm_ioctl *io)
{
	int fd = open("/dev/mapper/control", O_RDWR), err = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, cmd, io))
		err = -errno;
	close(fd);
	return err;
}

/*
 * Create a device-mapper device named after @tag with one target of type
 * @type over @sectors sectors with parameters @params ("major:minor offset"
 * for linear, "n chunk dev offset..." for striped), and resume it.
 * 0 or -errno.
 */
static inline int dm_create(struct dm_dev *dm, const char *tag,
			    const char *type, unsigned long long sectors,
			    const char *params)
{
	char buf[sizeof(struct dm_ioctl) + sizeof(struct dm_target_spec) + 1024];
	struct dm_target_spec *spec;
	struct dm_ioctl *io;
	int err;

	snprintf(dm->name, sizeof(dm->name), "dmabufrw-%s-%d", tag, getpid());
	io = dm_ioctl_init(buf, sizeof(buf), dm->name);
	err = dm_cmd(DM_DEV_CREATE, io);
	if (err)
		return err;
	dm->devt = makedev(major(io->dev), minor(io->dev));
	snprintf(dm->path, sizeof(dm->path), "/dev/dm-%u", minor(io->dev));

	io = dm_ioctl_init(buf, sizeof(buf), dm->name);
	io->target_count = 1;
	spec = (struct dm_target_spec *)(buf + sizeof(*io));
	spec->sector_start = 0;
	spec->length = sectors;
	snprintf(spec->target_type, sizeof(spec->target_type), "%s", type);
	snprintf((char *)(spec + 1), 1024, "%s", params);
	err = dm_cmd(DM_TABLE_LOAD, io);
	if (!err) {
		io = dm_ioctl_init(buf, sizeof(buf), dm->name);
		err = dm_cmd(DM_DEV_SUSPEND, io);	/* no flag: resume */
	}
	if (err) {
		io = dm_ioctl_init(buf, sizeof(buf), dm->name);
		dm_cmd(DM_DEV_REMOVE, io);
		dm->devt = 0;
		return err;
	}
	/* devtmpfs makes the node on its own time */
	for (int i = 0; i < 100 && blk_devt(dm->path) != dm->devt; i++)
		usleep(10000);
	return blk_devt(dm->path) == dm->devt ? 0 : -ENOENT;
}

/*
 * Load a new table of one target into the device and make it live (suspend,
 * swap, resume): 0 or -errno.
 */
static inline int dm_reload(struct dm_dev *dm, const char *type,
			    unsigned long long sectors, const char *params)
{
	char buf[sizeof(struct dm_ioctl) + sizeof(struct dm_target_spec) + 1024];
	struct dm_target_spec *spec;
	struct dm_ioctl *io;
	int err;

	io = dm_ioctl_init(buf, sizeof(buf), dm->name);
	io->target_count = 1;
	spec = (struct dm_target_spec *)(buf + sizeof(*io));
	spec->length = sectors;
	snprintf(spec->target_type, sizeof(spec->target_type), "%s", type);
	snprintf((char *)(spec + 1), 1024, "%s", params);
	err = dm_cmd(DM_TABLE_LOAD, io);
	if (err)
		return err;
	io = dm_ioctl_init(buf, sizeof(buf), dm->name);
	io->flags = DM_SUSPEND_FLAG;
	err = dm_cmd(DM_DEV_SUSPEND, io);
	if (err)
		return err;
	io = dm_ioctl_init(buf, sizeof(buf), dm->name);
	return dm_cmd(DM_DEV_SUSPEND, io);	/* resume: the new table */
}

/* Remove the device: 0 or -errno. */
static inline int dm_remove(struct dm_dev *dm)
{
	char buf[sizeof(struct dm_ioctl)];
	int err = 0, tries;

	if (!dm->devt)
		return 0;
	for (tries = 0; tries < 100; tries++) {
		err = dm_cmd(DM_DEV_REMOVE, dm_ioctl_init(buf, sizeof(buf),
							  dm->name));
		if (err != -EBUSY)
			break;
		usleep(20000);
	}
	dm->devt = 0;
	return err;
}

#endif /* DMABUFRW_TEST_STACK_H */
