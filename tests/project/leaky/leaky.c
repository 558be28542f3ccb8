// SPDX-License-Identifier: GPL-2.0
/*
 * leaky - a misc device whose every read allocates a megabyte and never
 * frees it: a module that allocates without bound, for the harness's test
 * that a guest which runs out of memory gives a verdict (crashed, with the
 * OOM killer's report), not a hang (tests/vm/test_oom.py).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/sizes.h>
#include <linux/vmalloc.h>

static ssize_t leaky_read(struct file *file, char __user *buf, size_t len,
			  loff_t *ppos)
{
	char *leak = vmalloc(SZ_1M);

	if (!leak)
		return -ENOMEM;
	memset(leak, 0xa5, SZ_1M);	/* touch it: the pages are really taken */
	return 0;
}

static const struct file_operations leaky_fops = {
	.owner = THIS_MODULE,
	.read = leaky_read,
	.llseek = noop_llseek,
};

static struct miscdevice leaky_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "leaky",
	.fops = &leaky_fops,
	.mode = 0444,
};

module_misc_device(leaky_dev);

MODULE_DESCRIPTION("A misc device that leaks a megabyte per read");
MODULE_LICENSE("GPL");
