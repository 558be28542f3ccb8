// SPDX-License-Identifier: GPL-2.0
/*
 * ownerlessproto - a socket family written as protocols are, but for two
 * lines: its proto and proto_ops name no .owner (unless built with
 * -DOWNERLESS_OWNER), so an open socket does not pin the module.  Another
 * project's module for the harness's held-callers test
 * (tests/vm/test_held_ops.py): a socket made before an unload and closed
 * after it runs the freed module's release.  It takes family 25
 * (AF_WANPIPE), which no kernel implements.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/net.h>
#include <net/sock.h>

#define OWNERLESSPROTO_FAMILY 25

static struct proto ownerlessproto_proto = {
	.name = "OWNERLESS",
#ifdef OWNERLESS_OWNER
	.owner = THIS_MODULE,
#endif
	.obj_size = sizeof(struct sock),
};

static int ownerlessproto_release(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (!sk)
		return 0;
	sock_orphan(sk);
	sock->sk = NULL;
	sock_put(sk);
	return 0;
}

static const struct proto_ops ownerlessproto_ops = {
	.family = OWNERLESSPROTO_FAMILY,
#ifdef OWNERLESS_OWNER
	.owner = THIS_MODULE,
#endif
	.release = ownerlessproto_release,
	.bind = sock_no_bind,
	.connect = sock_no_connect,
	.socketpair = sock_no_socketpair,
	.accept = sock_no_accept,
	.getname = sock_no_getname,
	.poll = datagram_poll,
	.ioctl = sock_no_ioctl,
	.listen = sock_no_listen,
	.shutdown = sock_no_shutdown,
	.sendmsg = sock_no_sendmsg,
	.recvmsg = sock_no_recvmsg,
	.mmap = sock_no_mmap,
};

static int ownerlessproto_create(struct net *net, struct socket *sock,
				 int protocol, int kern)
{
	struct sock *sk;

	if (sock->type != SOCK_DGRAM)
		return -ESOCKTNOSUPPORT;
	sk = sk_alloc(net, OWNERLESSPROTO_FAMILY, GFP_KERNEL,
		      &ownerlessproto_proto, kern);
	if (!sk)
		return -ENOMEM;
	sock->ops = &ownerlessproto_ops;
	sock_init_data(sock, sk);
	return 0;
}

static const struct net_proto_family ownerlessproto_family = {
	.family = OWNERLESSPROTO_FAMILY,
	.create = ownerlessproto_create,
	.owner = THIS_MODULE,
};

static int __init ownerlessproto_init(void)
{
	int ret = proto_register(&ownerlessproto_proto, 0);

	if (ret)
		return ret;
	ret = sock_register(&ownerlessproto_family);
	if (ret) {
		pr_err("cannot register family %d: %d\n", OWNERLESSPROTO_FAMILY, ret);
		proto_unregister(&ownerlessproto_proto);
	}
	return ret;
}

static void __exit ownerlessproto_exit(void)
{
	sock_unregister(OWNERLESSPROTO_FAMILY);
	proto_unregister(&ownerlessproto_proto);
}

module_init(ownerlessproto_init);
module_exit(ownerlessproto_exit);
MODULE_DESCRIPTION("A socket family whose proto and proto_ops lack .owner (harness test project)");
MODULE_LICENSE("GPL");
