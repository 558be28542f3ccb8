"""The initramfs writer and module dependency closure, without a VM."""

import shutil
import subprocess

import pytest

from harness import image
from harness.kernels import KernelFiles


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
    kf = KernelFiles("6.1", "r", "v", tmp_path)
    kf.modules_dir.mkdir(parents=True)
    (kf.modules_dir / "modules.dep").write_text(
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/virtio.ko\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/failover.ko\n"
        "kernel/virtio.ko:\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/virtio.ko\n")
    got = image.module_closure(kf, ("virtio_pci", "virtio_net", "builtin_thing"))
    assert got == ["kernel/drivers/virtio/virtio_pci.ko", "kernel/virtio.ko",
                   "kernel/drivers/net/virtio_net.ko", "kernel/drivers/net/net_failover.ko"]
