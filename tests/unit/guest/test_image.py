"""The initramfs writer and module dependency closure, without a VM."""

import shutil
import subprocess

import pytest

from harness.errors import HarnessError
from harness.guest import image, modtree
from harness.kernels import ROWS, KernelFiles


def test_cpio_is_readable_by_cpio(tmp_path):
    c = image.Cpio()
    c.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    c.symlink("bin/hi", "hello")
    c.file("etc/odd", b"x" * 5)
    data = c.finish()
    assert len(data) % 4 == 0
    if not shutil.which("cpio"):
        pytest.skip("cpio(1) not installed to cross-check the format")
    out = subprocess.run(["cpio", "-t", "-v"], input=data, capture_output=True).stdout.decode()
    assert "bin/hello" in out and "bin/hi -> hello" in out and "etc/odd" in out
    assert out.index("bin\n") < out.index("bin/hello") if "bin\n" in out else True


def test_module_closure_follows_modules_dep(tmp_path):
    kf = KernelFiles(ROWS["6.1"], "r", "v", tmp_path)
    kf.modules_dir.mkdir(parents=True)
    (kf.modules_dir / "modules.dep").write_text(
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/virtio.ko\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/failover.ko\n"
        "kernel/virtio.ko:\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/virtio.ko\n"
    )
    got = modtree.module_closure(kf, ("virtio_pci", "virtio_net", "builtin_thing"))
    assert got == [
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/virtio.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/net/net_failover.ko",
    ]


def _fake_kernel(tmp_path):
    from harness.kernels import ROWS, KernelFiles

    k = KernelFiles(ROWS["6.1"], "6.1.0-1-amd64", "1", tmp_path)
    k.modules_dir.mkdir(parents=True)
    (k.modules_dir / "modules.dep").write_text(
        "kernel/fs/minix/minix.ko:\n"
        "kernel/drivers/block/loop.ko:\n"
        "kernel/fs/nls/nls-cp437.ko.xz: kernel/fs/nls/nls_base.ko.xz\n"
        "kernel/fs/nls/nls_base.ko.xz:\n"
    )
    (k.modules_dir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return k


def test_kmods_by_name_with_their_dependencies(tmp_path):
    from harness.guest.modtree import check_kmods, module_closure

    k = _fake_kernel(tmp_path)
    names = check_kmods(k, ("minix", "nls-cp437", "ext4", "minix"))
    assert names == ("minix", "nls_cp437", "ext4"), "normalised, once each; built-ins are fine"
    assert module_closure(k, names) == [
        "kernel/fs/minix/minix.ko",
        "kernel/fs/nls/nls-cp437.ko.xz",
        "kernel/fs/nls/nls_base.ko.xz",
    ]


@pytest.mark.parametrize(
    "bad, msg", [("nosuch", "has no module 'nosuch'"), ("minix.ko", "not a file"), ("fs/minix", "not a file")]
)
def test_unknown_kmods_are_bad_input(tmp_path, bad, msg):
    from harness.guest.modtree import check_kmods

    with pytest.raises(HarnessError, match=msg):
        check_kmods(_fake_kernel(tmp_path), (bad,))


def test_the_base_has_debians_users_with_root_on_the_guests_own_shell():
    master = "root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    assert image.passwd(master) == (
        "root:x:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
