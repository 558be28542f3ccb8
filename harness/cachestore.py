"""What the cache holds, by kind, and pruning it without touching what is in use.

Each kind is a row: a folder of the cache whose children are its entries
(an unpacked kernel, a build root, a saved guest, ...).  An entry's size is
what it takes on disk (sparse snapshots count their blocks, not their
length); its last use is the newest change time of anything in it, or access time
of a file in it (relatime keeps that within a day, enough for days; a
folder's access time is left out: listing it is an access).

An entry is **in use**, and never pruned, when its build lock
(`ENTRY.lock` beside it) is held, or when a live process has a file open in
it, runs in it, or names a path in it on its command line (QEMU's -kernel,
-initrd and snapshot files; a build's overlay mount).  Pruning renames an
entry out of the way under its lock first, so a process that starts to look
for it meanwhile finds it absent and makes it again, never half-removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .errors import HarnessError
from .util import remove_path, try_file_lock


@dataclass(frozen=True)
class CacheKind:
    name: str  # its folder under the cache
    what: str
    prunable: bool = True
    whole: bool = False  # the folder is one entry (its parts make one state)


KINDS: tuple[CacheKind, ...] = (
    CacheKind("kernels", "unpacked and derived kernels"),
    CacheKind("buildroots", "build roots: a release's compiler and kernel source, and debug kernels' objects"),
    CacheKind("debs", "downloaded Debian packages"),
    CacheKind("apt", "Debian package lists", whole=True),
    CacheKind("images", "guest initramfs images, payloads and module-tree disks"),
    CacheKind("snapshots", "saved guests, restored in place of a boot"),
    CacheKind("kmods", "the harness's modules built per kernel"),
    CacheKind("modbuild", "module folders built per kernel"),
    CacheKind("guest-userland", "the guest's user space"),
    CacheKind("guest-packages", "Debian packages unpacked for guests"),
    CacheKind("racer", "the static racer"),
    CacheKind("harness-seed", "the guest's seed helper"),
    CacheKind("ssh", "the guests' SSH keys", prunable=False),
)
SKIP = re.compile(r".*\.(lock|tmp)$|^\.trash-")


@dataclass(frozen=True)
class Entry:
    kind: CacheKind
    path: Path
    size: int  # bytes on disk
    last_use: float  # seconds since the epoch


def _walk(path: Path) -> Iterator[os.stat_result]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    yield st
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            for child in os.scandir(path):
                yield from _walk(Path(child.path))


def measure(kind: CacheKind, path: Path) -> Entry:
    size = 0
    last = 0.0
    for st in _walk(path):
        size += st.st_blocks * 512
        # A folder's atime is our own listing's (reading it updates it): files' only.
        last = max(last, st.st_mtime, st.st_atime if stat.S_ISREG(st.st_mode) else 0)
    return Entry(kind, path, size, last)


def entries(cache: Path, kinds: Sequence[CacheKind] = KINDS) -> list[Entry]:
    out = []
    for kind in kinds:
        folder = cache / kind.name
        if not folder.is_dir():
            continue
        if kind.whole:
            out.append(measure(kind, folder))
            continue
        for child in sorted(folder.iterdir()):
            if not SKIP.fullmatch(child.name):
                out.append(measure(kind, child))
    return out


def _processes() -> Iterator[tuple[int, str, list[str]]]:
    """Every live process we can see: pid, command name, paths it holds (open
    files, its working folder) and the words of its command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        held: list[str] = []
        with contextlib.suppress(OSError):
            held += (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        with contextlib.suppress(OSError):
            held.append(os.readlink(proc / "cwd"))
        with contextlib.suppress(OSError):
            for fd in os.scandir(proc / "fd"):
                with contextlib.suppress(OSError):
                    held.append(os.readlink(fd.path))
        comm = ""
        with contextlib.suppress(OSError):
            comm = (proc / "comm").read_text().strip()
        yield int(proc.name), comm, held


def users(paths: Iterable[Path]) -> dict[Path, tuple[int, str]]:
    """Of `paths`, those a live process holds (a pid and its name each)."""
    roots = {str(p): p for p in paths}
    out: dict[Path, tuple[int, str]] = {}
    if not roots:
        return out
    pattern = re.compile("(" + "|".join(re.escape(r) for r in roots) + r")(?=$|[/,:=\s])")
    for pid, comm, held in _processes():
        for word in held:
            for m in pattern.finditer(word):
                out.setdefault(roots[m[1]], (pid, comm))
    return out


@dataclass(frozen=True)
class Pruned:
    removed: tuple[Entry, ...]
    kept_in_use: tuple[tuple[Entry, str], ...]  # (entry, why)


def choose(found: Sequence[Entry], now: float, keep_days: float | None, max_size: int | None) -> list[Entry]:
    """What pruning removes: entries unused for more than keep_days, then the
    least recently used until the prunable total is within max_size."""
    prunable = sorted((e for e in found if e.kind.prunable), key=lambda e: e.last_use)
    out = [e for e in prunable if keep_days is not None and now - e.last_use > keep_days * 86400]
    if max_size is not None:
        total = sum(e.size for e in prunable if e not in out)
        for e in prunable:
            if total <= max_size:
                break
            if e not in out:
                out.append(e)
                total -= e.size
    return out


def prune(cache: Path, chosen: Sequence[Entry], dry_run: bool = False) -> Pruned:
    busy = users(e.path for e in chosen)
    removed, kept = [], []
    for e in chosen:
        if e.path in busy:
            pid, comm = busy[e.path]
            kept.append((e, f"in use by pid {pid} ({comm})"))
            continue
        with try_file_lock(e.path.with_name(e.path.name + ".lock")) as free:
            if not free:
                kept.append((e, "its build lock is held"))
                continue
            if not dry_run:
                trash = e.path.with_name(f".trash-{e.path.name}-{os.getpid()}")
                os.replace(e.path, trash)
                remove_path(trash)
            removed.append(e)
    return Pruned(tuple(removed), tuple(kept))


UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise HarnessError(f"--max-size wants a size such as 20G, 512M or 0, got {text!r}")
    return int(float(m[1]) * UNITS[m[2]])


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def day(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def render(found: Sequence[Entry], verbose: bool = False) -> str:
    lines = [f"{'kind':<16} {'entries':>7} {'size':>10}  last use"]
    for kind in KINDS:
        mine = [e for e in found if e.kind is kind]
        if not mine:
            continue
        lines.append(
            f"{kind.name:<16} {len(mine):>7} {human(sum(e.size for e in mine)):>10}  "
            f"{day(max(e.last_use for e in mine))}  {kind.what}" + ("" if kind.prunable else " (never pruned)")
        )
        if verbose:
            for e in sorted(mine, key=lambda e: -e.last_use):
                lines.append(f"  {e.path.name:<40} {human(e.size):>10}  {day(e.last_use)}")
    lines.append(f"{'total':<16} {len(found):>7} {human(sum(e.size for e in found)):>10}")
    return "\n".join(lines)
