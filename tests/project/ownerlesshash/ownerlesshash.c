// SPDX-License-Identifier: GPL-2.0
/*
 * ownerlesshash - a hash algorithm written as crypto algorithms are, but for
 * one line: it names no .cra_module (unless built with -DOWNERLESS_OWNER), so
 * a transform does not pin the module.  Another project's module for the
 * harness's held-callers test (tests/vm/test_held_ops.py): an AF_ALG socket
 * bound before an unload leaves the algorithm in use when the module goes
 * (crypto_unregister_alg() finds its reference count above one).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/internal/hash.h>
#include <linux/module.h>
#include <linux/string.h>

struct ownerlesshash_ctx {
	u32 sum;
};

static int ownerlesshash_init(struct shash_desc *desc)
{
	struct ownerlesshash_ctx *ctx = shash_desc_ctx(desc);

	ctx->sum = 0;
	return 0;
}

static int ownerlesshash_update(struct shash_desc *desc, const u8 *data,
				unsigned int len)
{
	struct ownerlesshash_ctx *ctx = shash_desc_ctx(desc);

	while (len--)
		ctx->sum = ctx->sum * 31 + *data++;
	return 0;
}

static int ownerlesshash_final(struct shash_desc *desc, u8 *out)
{
	struct ownerlesshash_ctx *ctx = shash_desc_ctx(desc);
	__le32 sum = cpu_to_le32(ctx->sum);

	memcpy(out, &sum, sizeof(sum));
	return 0;
}

static struct shash_alg ownerlesshash_alg = {
	.digestsize = 4,
	.init = ownerlesshash_init,
	.update = ownerlesshash_update,
	.final = ownerlesshash_final,
	.descsize = sizeof(struct ownerlesshash_ctx),
	.base = {
		.cra_name = "ownerless",
		.cra_driver_name = "ownerless-generic",
		.cra_priority = 100,
		.cra_blocksize = 1,
#ifdef OWNERLESS_OWNER
		.cra_module = THIS_MODULE,
#endif
	},
};

static int __init ownerlesshash_mod_init(void)
{
	return crypto_register_shash(&ownerlesshash_alg);
}

static void __exit ownerlesshash_mod_exit(void)
{
	crypto_unregister_shash(&ownerlesshash_alg);
}

module_init(ownerlesshash_mod_init);
module_exit(ownerlesshash_mod_exit);
MODULE_DESCRIPTION("A hash algorithm that lacks .cra_module (harness test project)");
MODULE_LICENSE("GPL");
