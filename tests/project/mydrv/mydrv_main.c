// SPDX-License-Identifier: GPL-2.0
/*
 * A small misc device for the harness's "another project" test: /dev/mydrv
 * reads back a greeting.  Built by the kmod_build fixture, not by the harness's
 * own templates.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/miscdevice.h>
#include <linux/module.h>

#include "mydrv.h"

static struct miscdevice mydrv_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mydrv",
	.fops = &mydrv_fops,
	.mode = 0444,
};

static int __init mydrv_init(void)
{
	int ret = misc_register(&mydrv_dev);

	if (ret)
		return ret;
	pr_info("registered /dev/%s\n", mydrv_dev.name);
	return 0;
}

static void __exit mydrv_exit(void)
{
	misc_deregister(&mydrv_dev);
	pr_info("unregistered\n");
}

module_init(mydrv_init);
module_exit(mydrv_exit);
MODULE_DESCRIPTION("A greeting misc device (harness example project)");
MODULE_LICENSE("GPL");
