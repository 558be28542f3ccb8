"""Debian's debug info for a packaged kernel: `linux-image-<release>-dbg`
(for 6.1: 858 MB to download, 5.6 GB unpacked), fetched on demand
(`fetch --kernel 6.1 --debug-info`) into the kernel's cache folder.  Its
vmlinux and modules have DWARF: drgn and crash read a vmcore of `race
--dump` with them, and splats get file:line.

A kernel built here gets the same from `--kconfig debuginfo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError
from ..progress import progress
from ..util import cached, need_tool, run_tool

if TYPE_CHECKING:
    from .files import KernelFiles

MARKER = ".complete"


def folder(kernel: KernelFiles) -> Path:
    """Where the -dbg package's files are (usr/lib/debug/...)."""
    return kernel.root.parent / "dbg"


def vmlinux(kernel: KernelFiles) -> Path | None:
    """The -dbg vmlinux, if it was fetched."""
    path = folder(kernel) / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{kernel.release}"
    return path if (folder(kernel) / MARKER).is_file() and path.is_file() else None


def modules_dir(kernel: KernelFiles) -> Path | None:
    path = folder(kernel) / "usr" / "lib" / "debug" / "lib" / "modules" / kernel.release
    return path if (folder(kernel) / MARKER).is_file() and path.is_dir() else None


def fetch(kernel: KernelFiles) -> Path:
    """The -dbg package's vmlinux and modules in the cache (downloaded and
    unpacked once); the folder they are under."""
    if kernel.row.source is not None or kernel.row.base is not None or kernel.version.startswith("local-"):
        raise HarnessError(
            f"--debug-info: {kernel.name} is not one of Debian's packaged kernels; a kernel built here gets "
            "DWARF from --kconfig debuginfo"
        )
    from .apt.catalogue import update

    need_tool("dpkg-deb", "dpkg")
    final = folder(kernel)
    pin = f"linux-image-{kernel.release}-dbg={kernel.version}"

    def reuse() -> Path | None:
        return final if (final / MARKER).is_file() else None

    def build(tmp: Path) -> Path:
        tmp.mkdir(parents=True)
        cat = update()
        progress(f"debug info: downloading {pin} (Debian's DWARF for {kernel.release}: hundreds of MB)")
        run_tool(cat.argv("apt-get", "download", "-q", pin), cwd=tmp, what=f"apt-get download {pin}")
        (deb,) = tmp.glob("*.deb")
        progress(f"debug info: {deb.stat().st_size >> 20} MiB; unpacking vmlinux and modules")
        # dpkg-deb streams the data archive to tar: only the two folders are written.
        run_tool(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ./usr/lib/debug/boot ./usr/lib/debug/lib/modules',
                "unpack",
                deb,
                tmp,
            ],
            what=f"unpacking {deb.name}",
        )
        deb.unlink()
        (tmp / MARKER).write_text(pin + "\n")
        return final

    return cached(final, final.with_name("dbg.lock"), reuse, build, tmp=final.with_name("dbg.tmp"))
