// SPDX-License-Identifier: GPL-2.0
#include <linux/fs.h>
#include <linux/module.h>

#include "mydrv.h"

static const char greeting[] = MYDRV_GREETING "\n";

static ssize_t mydrv_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	return simple_read_from_buffer(buf, len, ppos, greeting, sizeof(greeting) - 1);
}

const struct file_operations mydrv_fops = {
	.owner = THIS_MODULE,
	.read = mydrv_read,
	.llseek = default_llseek,
};
