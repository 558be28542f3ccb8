"""The kernels the harness knows, one row each: start here.

A row names which Debian meta-packages of which release stand for a kernel
(`6.1` is bookworm's linux-image-amd64), or which source package and config
fragment the harness builds it from (`6.12-debug`), or (`--kernel PATH`) a
kernel built elsewhere.  apt/ resolves a row to exact packages; unpack.py
turns it into the unpacked kernel (`KernelFiles`) the later stages take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError
from ..paths import data_dir
from . import localtree
from .localtree import LocalTree


@dataclass(frozen=True)
class KernelRow:
    """One kernel spec: which meta-packages of which release stand for it,
    (``source`` set) which source package and config fragment the harness
    builds it from, or (``local`` set) a kernel built elsewhere, named by its
    path (localtree.py)."""

    name: str
    release: str  # "bookworm"; its suites: apt.suites_of(release); LOCAL_RELEASE for a local tree
    flavour: str  # "amd64", "rt-amd64"; "debug" for a kernel built here
    series: str | None  # the ABI must start with it; None for moving targets
    source: str | None = None  # "linux-source-6.12": built from Debian's source
    fragments: tuple[str, ...] = ()  # its config fragments under kconfigs/, merged in order
    # Guest slowdown against a stock kernel (lockdep and KASAN under TCG):
    # boot timeouts, race durations and latency bounds are multiplied by it.
    time_factor: float = 1.0
    # Boot the ELF vmlinux through its PVH entry (no decompression under TCG);
    # False boots the bzImage.
    boot_elf: bool = True
    # Kernel parameters this kernel's guests always boot with (part of the
    # snapshot key, like the rest of the QEMU command line).
    cmdline: tuple[str, ...] = ()
    local: LocalTree | None = None
    # A derived kernel (derive.py): the row it is built from, with these
    # config options (CONFIG_X=v lines) and patches on top.
    base: str | None = None
    options: tuple[str, ...] = ()
    patches: tuple[Path, ...] = ()

    @property
    def image_meta(self) -> str:
        return f"linux-image-{self.flavour}"

    @property
    def headers_meta(self) -> str:
        return f"linux-headers-{self.flavour}"

    @property
    def fragment_paths(self) -> tuple[Path, ...]:
        return tuple(KCONFIGS / f for f in self.fragments)


def _debug(name: str, release: str, series: str | None, source: str) -> KernelRow:
    """A kernel built here from `source` with kconfigs/debug.config (lockdep, KASAN)
    and kconfigs/families.config (the hardware-free modules, for them to see).

    Its PVH entry triple-faults at once under TCG (KASAN's early shadow
    setup, seen with 6.12.118): it boots through the bzImage.
    kasan_multi_shot: generic KASAN reports only the first bad access of a
    boot otherwise (mm/kasan/report.c, report_enabled()), and a guest must
    see every one of a run's.
    no5lvl: with QEMU's `-cpu max` the guest has LA57.  identify_cpu()
    zeroes boot_cpu_data's capabilities (arch/x86/kernel/cpu/common.c) with
    interrupts already on (init/main.c); an interrupt in that window runs
    KASAN's range check, whose pgtable_l5_enabled() then reads LA57 as off,
    puts the direct map (ff11...) below the shadow's start and reports
    "wild-memory-access in do_raw_spin_lock".  With 4-level paging the
    answer cannot change under it."""
    return KernelRow(
        name,
        release,
        "debug",
        series,
        source=source,
        fragments=("debug.config", "families.config"),
        time_factor=4.0,
        boot_elf=False,
        cmdline=("kasan_multi_shot", "no5lvl"),
    )


KCONFIGS = data_dir("kconfigs")
# A local tree comes from no Debian release: nothing looks its suite up.
LOCAL_RELEASE = "local"

ROWS: dict[str, KernelRow] = {
    r.name: r
    for r in (
        KernelRow("5.10", "bullseye", "amd64", "5.10"),
        KernelRow("5.10-rt", "bullseye", "rt-amd64", "5.10"),
        KernelRow("6.1", "bookworm", "amd64", "6.1"),
        KernelRow("6.1-rt", "bookworm", "rt-amd64", "6.1"),
        KernelRow("6.12", "trixie", "amd64", "6.12"),
        KernelRow("6.12-rt", "trixie", "rt-amd64", "6.12"),
        KernelRow("sid", "sid", "amd64", None),
        KernelRow("sid-rt", "sid", "rt-amd64", None),
        KernelRow("rc", "experimental", "amd64", None),
        _debug("6.12-debug", "trixie", "6.12", "linux-source-6.12"),
        # The same fragment on the 6.1 most users run: bookworm's source, its gcc-12.
        _debug("6.1-debug", "bookworm", "6.1", "linux-source-6.1"),
        # And on sid's, with sid's compiler (gcc-16): the newest the archive has.
        _debug("sid-debug", "sid", None, "linux-source-7.2"),
    )
}
# `--kernel all`: every spec that comes as packages; kernels built here are
# asked for by name (a cold build takes many minutes).
PACKAGED = tuple(r.name for r in ROWS.values() if r.source is None)
DEFAULT_KERNEL = "6.1"
DEFAULT_RELEASE = ROWS[DEFAULT_KERNEL].release  # also where the guest's user space comes from

VALID = f"valid: {', '.join(ROWS)}, all, or the PATH of a kernel build tree or installed root"


def local_row(path: str) -> KernelRow:
    """The row of a kernel built elsewhere (`--kernel PATH`), found and
    checked now: its name is the path, its boot image and guest settings
    come from the tree."""
    tree = localtree.discover(path)
    return KernelRow(
        str(tree.path),
        LOCAL_RELEASE,
        "local",
        None,
        time_factor=tree.time_factor,
        boot_elf=tree.vmlinux is not None,
        cmdline=tree.cmdline,
        local=tree,
    )


def parse_specs(text: str) -> list[KernelRow]:
    """`6.1,6.12`, `all` or `6.1,/src/linux` -> rows; a path is a local tree,
    found and checked now (before anything boots).  Unknown names are a
    clear error."""
    names = list(PACKAGED) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    if not any(names):
        raise HarnessError(f"no kernel given; {VALID}")
    if not all(names):
        raise HarnessError(f"empty kernel name in {text!r} (stray comma?); {VALID}")
    for n in names:
        if n not in ROWS and not localtree.looks_like_path(n):
            raise HarnessError(f"unknown kernel spec {n!r}; {VALID}")
    return [ROWS[n] if n in ROWS else local_row(n) for n in names]


def get_spec(name: str) -> KernelRow:
    """One kernel's row: a name in the table or the path of a local tree."""
    specs = parse_specs(name)
    if len(specs) != 1:
        raise HarnessError(f"one kernel expected here, got {name!r}")
    return specs[0]


def get_row(name: str) -> KernelRow:
    """A row of the table only (what the catalogue downloads): no local tree."""
    if name not in ROWS:
        raise HarnessError(f"unknown kernel spec {name!r}; valid: {', '.join(ROWS)}, all")
    return ROWS[name]
