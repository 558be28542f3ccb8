"""`--kernel PATH` end to end, on a local tree made cheaply from a real kernel:
Debian's 6.1 from the cache, laid out where kbuild leaves things after
`make` (arch/x86/boot/bzImage, vmlinux, .config, include/config/
kernel.release, modules.order with its .ko files at their paths,
Module.symvers, System.map), with the few modules the test loads.  It boots
through the CLI and modprobes one of the tree's own modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import kernels
from harness.guest.image import BOOT_MODULES
from harness.guest.modtree import module_closure
from harness.kernels import localtree
from tests.tools import REPO

pytestmark = pytest.mark.vm

LOADED = ("minix", "dummy")


def build_tree_from(kernel: kernels.KernelFiles, dest: Path, names: tuple[str, ...]) -> Path:
    """`kernel` laid out as a build tree in `dest`: files linked, not copied;
    modules.order lists `names`, the boot modules and their dependencies in
    the 6.1 form (.ko)."""
    links = {
        "arch/x86/boot/bzImage": kernel.vmlinuz,
        "vmlinux": kernel.vmlinux,
        "System.map": kernel.root / "boot" / f"System.map-{kernel.release}",
        "Module.symvers": kernel.headers_dir / "Module.symvers",
    }
    order = module_closure(kernel, BOOT_MODULES + names)
    links.update({rel.removeprefix("kernel/"): kernel.modules_dir / rel for rel in order})
    for rel, target in links.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).symlink_to(target)
    shutil.copyfile(kernel.root / "boot" / f"config-{kernel.release}", dest / ".config")
    for meta in ("modules.builtin", "modules.builtin.modinfo"):
        shutil.copyfile(kernel.modules_dir / meta, dest / meta)
    (dest / "include" / "config").mkdir(parents=True)
    (dest / "include" / "config" / "kernel.release").write_text(kernel.release + "\n")
    (dest / "modules.order").write_text("".join(rel.removeprefix("kernel/") + "\n" for rel in order))
    return dest


def test_a_build_tree_boots_and_loads_its_own_modules(tmp_path):
    debian = kernels.fetch(kernels.get_spec("6.1"), quiet=True)
    tree = build_tree_from(debian, tmp_path / "linux", LOADED)
    script = (
        "uname -r && /sbin/modprobe minix && /sbin/modprobe dummy && "
        "grep -cw minix /proc/filesystems && cat /sys/module/dummy/initstate"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "--kernel",
            str(tree),
            *[a for name in LOADED for a in ("--kmod", name)],
            "--",
            script,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [debian.release, "1", "live"], res.stderr
    assert f"kernel {tree}: build tree, release {debian.release}" in res.stderr


def test_the_guest_fragment_asks_nothing_the_kernels_under_test_lack(kernel):
    """Every kernel the harness boots passes the check a local tree must
    pass: a fragment that refused them would ask too much."""
    needs = localtree.guest_needs(localtree.GUEST_FRAGMENT.read_text())
    assert localtree.unmet_needs(kernel.config, needs) == []
