"""The unpacked kernel the later stages take (`KernelFiles`), and where a
resolved kernel lives in the cache."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir
from . import derive
from .apt import ResolvedKernel
from .table import KernelRow


@dataclass(frozen=True)
class KernelFiles:
    """An unpacked kernel with its row of the kernel table: the one object the module
    build, the image and the VM take; nothing looks its row up again by name."""

    row: KernelRow
    release: str  # uname -r
    # Debian's version of its image (or source) package; for a local tree
    # "local-" and a hash of its image, config and modules.
    version: str
    root: Path
    describe: str = ""  # where it comes from, for reports: "Debian 6.1.192-3", "build tree, git v6.12-rc1"

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def identity(self) -> str:
        """What cache keys of things made from this kernel start from: its
        release, and for a derived kernel (same release as its base) its own
        identity too."""
        ident = derive.ident_of(self.row)
        return f"{self.release}+{ident}" if ident else self.release

    @property
    def label(self) -> str:
        """Its name as a part of a file name: a local tree's is the path's last part."""
        return Path(self.name).name or "kernel"

    @property
    def suite(self) -> str:
        """The Debian release whose compiler builds its modules."""
        return self.row.release

    @property
    def time_factor(self) -> float:
        """How much slower this kernel's guest runs than a stock one."""
        return self.row.time_factor

    @property
    def cmdline(self) -> tuple[str, ...]:
        """Kernel parameters its row asks for (sanitiser settings, workarounds)."""
        return self.row.cmdline

    @property
    def boot_image(self) -> Path:
        """What QEMU's -kernel loads: the ELF vmlinux, or the bzImage where
        the kernel's row says its PVH entry does not boot."""
        return self.vmlinux if self.row.boot_elf else self.vmlinuz

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def vmlinux(self) -> Path:
        """The uncompressed ELF kernel: booted through its PVH entry, it skips
        seconds of decompression under TCG."""
        return self.root / "boot" / f"vmlinux-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    @property
    def headers_dir(self) -> Path:
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"

    @functools.cached_property
    def config(self) -> dict[str, str]:
        """Its .config, read once per object: the pytest plugin asks after every test."""
        conf = {}
        for line in (self.root / "boot" / f"config-{self.release}").read_text().splitlines():
            if line.startswith("CONFIG_"):
                key, _, val = line.partition("=")
                conf[key] = val
        return conf

    @property
    def lockdep(self) -> bool:
        """Whether its lockdep checks lock order (CONFIG_PROVE_LOCKING)."""
        return self.config.get("CONFIG_PROVE_LOCKING") == "y"

    @property
    def kasan(self) -> bool:
        """Whether it has KASAN's shadow checks (CONFIG_KASAN)."""
        return self.config.get("CONFIG_KASAN") == "y"


def root_of(res: ResolvedKernel) -> Path:
    """The kernel's folder in the cache: one per ABI, and one per derived
    kernel (its base's ABI and its own identity, derive.py)."""
    ident = derive.ident_of(res.row)
    return cache_dir() / "kernels" / (f"{res.abi}+{ident}" if ident else res.abi)


def files_of(res: ResolvedKernel) -> KernelFiles:
    origin = f"built here from {res.row.source} {res.version}" if res.row.source else f"Debian {res.version}"
    if res.row.base is not None:
        origin += f" + {len(res.row.options)} option(s), {len(res.row.patches)} patch(es) over {res.row.base}"
    return KernelFiles(res.row, res.abi, res.version, root_of(res) / "root", origin)
