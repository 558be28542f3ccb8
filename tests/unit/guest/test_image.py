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


def _tree_kernel(tmp_path, squashfs: str = "kernel/fs/squashfs/squashfs.ko:\n"):
    k = _fake_kernel(tmp_path)
    (k.modules_dir / "modules.dep").write_text(
        (k.modules_dir / "modules.dep").read_text() + "kernel/drivers/block/virtio_blk.ko:\n" + squashfs
    )
    for rel in ("kernel/fs/minix/minix.ko", "kernel/drivers/block/virtio_blk.ko"):
        (k.modules_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (k.modules_dir / rel).write_bytes(b"\x7fELF")
    return k


def test_a_kernel_that_can_mount_a_squashfs_from_a_virtio_disk_gets_its_whole_tree(tmp_path):
    assert modtree.has_tree_disk(_tree_kernel(tmp_path))


def test_no_tree_disk_without_squashfs_or_a_kernel_folder(tmp_path):
    assert not modtree.has_tree_disk(_tree_kernel(tmp_path / "a", squashfs=""))
    assert not modtree.has_tree_disk(_fake_kernel(tmp_path / "b"))  # no kernel/ folder on disk


def test_the_tree_disk_is_a_squashfs_of_the_kernel_folder_built_once(tmp_path, monkeypatch):
    if not shutil.which("mksquashfs") or not shutil.which("unsquashfs"):
        pytest.skip("squashfs-tools is not installed (make setup installs it)")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    k = _tree_kernel(tmp_path / "k")
    disk = modtree.tree_disk(k)
    assert disk is not None and modtree.tree_disk(k) == disk
    listing = subprocess.run(["unsquashfs", "-l", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "squashfs-root/fs/minix/minix.ko" in listing and "squashfs-root/drivers/block/virtio_blk.ko" in listing


def test_the_guest_mounts_the_tree_disk_read_only_over_its_kernel_folder():
    from harness.guest.qemu import guest_argv

    init = image._render(
        "init.sh.j2",
        ready_marker="R",
        wait_marker="W",
        fail_marker="F",
        boot_modules=("virtio_net",),
        tree_modules=("virtio_blk", "squashfs"),
        release="6.1.0-1-amd64",
        seed="/s",
    )
    assert "mount -t squashfs -o ro /dev/vda /lib/modules/6.1.0-1-amd64/kernel" in init
    plain = image._render(
        "init.sh.j2",
        ready_marker="R",
        wait_marker="W",
        fail_marker="F",
        boot_modules=("virtio_net",),
        tree_modules=(),
        release="6.1.0-1-amd64",
        seed="/s",
    )
    assert "squashfs" not in plain
    from pathlib import Path

    kf = KernelFiles(ROWS["6.1"], "r", "v", Path("/k"))

    argv = guest_argv(kf, Path("/i"), "tcg", 2222, cpus=2, memory_mb=512, modtree=Path("/c/modules.sqfs"))
    assert "file=/c/modules.sqfs,if=virtio,format=raw,readonly=on" in argv
    assert not any("if=virtio" in a for a in guest_argv(kf, Path("/i"), "tcg", 2222, cpus=2, memory_mb=512))


def test_a_kernel_made_again_under_its_identity_gets_a_new_tree_disk(tmp_path, monkeypatch):
    """A derived kernel rebuilt (same identity, new modules) must not boot
    with the old modules: the disk's key follows the kernel's marker."""
    if not shutil.which("mksquashfs"):
        pytest.skip("squashfs-tools is not installed (make setup installs it)")
    import os

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    k = _tree_kernel(tmp_path / "k")
    marker = k.root.parent / ".unpacked.json"
    marker.write_text("{}")
    first = modtree.tree_disk(k)
    assert modtree.tree_disk(k) == first
    os.utime(marker, ns=(marker.stat().st_atime_ns, marker.stat().st_mtime_ns + 10**9))  # installed again
    assert modtree.tree_disk(k) != first
