// SPDX-License-Identifier: GPL-2.0
/*
 * ownerlessfs - a pseudo file system written as file systems are, but for
 * one line: its file_system_type names no .owner (unless built with
 * -DOWNERLESS_OWNER), so a mount does not pin the module.  Another project's
 * module for the harness's held-callers test (tests/vm/test_held_ops.py): a
 * file system mounted before an unload and unmounted after it runs the
 * freed module's kill_sb.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/module.h>

#define OWNERLESSFS_MAGIC 0x6f776e6c	/* "ownl" */

static int ownerlessfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	static const struct tree_descr files[] = { { "" } };

	return simple_fill_super(sb, OWNERLESSFS_MAGIC, files);
}

static int ownerlessfs_get_tree(struct fs_context *fc)
{
	return get_tree_nodev(fc, ownerlessfs_fill_super);
}

static const struct fs_context_operations ownerlessfs_context_ops = {
	.get_tree = ownerlessfs_get_tree,
};

static int ownerlessfs_init_fs_context(struct fs_context *fc)
{
	fc->ops = &ownerlessfs_context_ops;
	return 0;
}

static void ownerlessfs_kill_sb(struct super_block *sb)
{
	kill_litter_super(sb);
}

static struct file_system_type ownerlessfs_type = {
#ifdef OWNERLESS_OWNER
	.owner = THIS_MODULE,
#endif
	.name = "ownerlessfs",
	.init_fs_context = ownerlessfs_init_fs_context,
	.kill_sb = ownerlessfs_kill_sb,
};

static int __init ownerlessfs_init(void)
{
	int ret = register_filesystem(&ownerlessfs_type);

	if (ret)
		pr_err("cannot register: %d\n", ret);
	return ret;
}

static void __exit ownerlessfs_exit(void)
{
	unregister_filesystem(&ownerlessfs_type);
}

module_init(ownerlessfs_init);
module_exit(ownerlessfs_exit);
MODULE_DESCRIPTION("A file system whose file_system_type lacks .owner (harness test project)");
MODULE_LICENSE("GPL");
