// SPDX-License-Identifier: GPL-2.0
/*
 * harness_noowner - the negative control of target races: a misc device
 * whose file_operations has no .owner, breaking the seed's golden rule.
 *
 * Nothing pins the module while a file is open or a read sleeps in it, so
 * delete_module() goes ahead at once and the exit frees the device's state,
 * as drivers do: a read that sleeps across the unload wakes up in freed
 * module text and reads the state through a pointer the exit has cleared (a
 * NULL dereference on any kernel; KASAN may report the freed module memory
 * first).  A race that survives this module is a race that did not happen.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

struct noowner_state {
	char greeting[32];
};

static struct noowner_state *state;

static unsigned int read_delay_us = 20000;
module_param(read_delay_us, uint, 0444);
MODULE_PARM_DESC(read_delay_us, "How long a read sleeps inside the module");

static ssize_t noowner_read(struct file *file, char __user *buf, size_t len,
			    loff_t *ppos)
{
	usleep_range(read_delay_us, read_delay_us + 100);
	return simple_read_from_buffer(buf, len, ppos, state->greeting,
				       strlen(state->greeting));
}

static int noowner_release(struct inode *inode, struct file *file)
{
	return 0;
}

/* No .owner, on purpose: misc_open()'s fops_get() pins nothing. */
static const struct file_operations noowner_fops = {
	.read = noowner_read,
	.release = noowner_release,
	.llseek = noop_llseek,
};

static struct miscdevice noowner_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "harness_noowner",
	.fops = &noowner_fops,
	.mode = 0444,
};

static int __init noowner_init(void)
{
	int ret;

	state = kzalloc(sizeof(*state), GFP_KERNEL);
	if (!state)
		return -ENOMEM;
	strscpy(state->greeting, "no owner\n", sizeof(state->greeting));
	ret = misc_register(&noowner_dev);
	if (ret) {
		kfree(state);
		state = NULL;
	}
	return ret;
}

static void __exit noowner_exit(void)
{
	misc_deregister(&noowner_dev);
	kfree(state);
	state = NULL;
}

module_init(noowner_init);
module_exit(noowner_exit);
MODULE_DESCRIPTION("A misc device without .owner: the target races' negative control");
MODULE_LICENSE("GPL");
