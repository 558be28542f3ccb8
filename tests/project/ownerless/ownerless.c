// SPDX-License-Identifier: GPL-2.0
/*
 * ownerless - a misc device written as drivers are, but for one line: its
 * file_operations name no .owner (unless built with -DOWNERLESS_OWNER), so
 * an open file does not pin the module.  Another project's driver for the
 * harness's held-callers test (tests/vm/test_held_ops.py): a file opened
 * before an unload and read or closed after it runs freed module text.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>

static const char ownerless_greeting[] = "ownerless\n";

struct ownerless_file {
	unsigned long reads;
};

static int ownerless_open(struct inode *inode, struct file *file)
{
	struct ownerless_file *of;

	msleep(5);	/* as a driver's open waits for its device */
	of = kzalloc(sizeof(*of), GFP_KERNEL);
	if (!of)
		return -ENOMEM;
	file->private_data = of;
	return 0;
}

static ssize_t ownerless_read(struct file *file, char __user *buf, size_t len,
			      loff_t *ppos)
{
	struct ownerless_file *of = file->private_data;

	of->reads++;
	return simple_read_from_buffer(buf, len, ppos, ownerless_greeting,
				       sizeof(ownerless_greeting) - 1);
}

static int ownerless_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

static const struct file_operations ownerless_fops = {
#ifdef OWNERLESS_OWNER
	.owner = THIS_MODULE,
#endif
	.open = ownerless_open,
	.read = ownerless_read,
	.release = ownerless_release,
	.llseek = noop_llseek,
};

static struct miscdevice ownerless_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ownerless",
	.fops = &ownerless_fops,
	.mode = 0444,
};

static int __init ownerless_init(void)
{
	int ret = misc_register(&ownerless_dev);

	if (ret)
		pr_err("cannot register /dev/%s: %d\n", ownerless_dev.name, ret);
	return ret;
}

static void __exit ownerless_exit(void)
{
	misc_deregister(&ownerless_dev);
}

module_init(ownerless_init);
module_exit(ownerless_exit);
MODULE_DESCRIPTION("A misc device whose file_operations lack .owner (harness test project)");
MODULE_LICENSE("GPL");
