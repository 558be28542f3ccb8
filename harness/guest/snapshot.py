"""Saved base guests: a guest restored from one instead of booted.

A cold guest stops at init's wait marker (user space up, networking set, no
test modules, no SSH server yet).  There QEMU saves it once per key: the
kernel, the base initramfs, QEMU itself, the firmware and every machine
option (the QEMU command line with the SSH port left out).

A snapshot is two files.  `ram` is the guest's memory as a sparse file;
`state` is the device state, saved with `x-ignore-shared` so it carries no
RAM.  A restore maps `ram` privately (`share=off`): the guest's writes go to
its own copy-on-write pages, the file is never written, and pages come in on
first touch, so a restore reads about 0.5 MB instead of the 100 MB a plain
migration stream holds.  To get there the cold guest's migration stream is
loaded once into a converter QEMU whose RAM is that file, shared, which then
saves its device state alone.

Each save goes to a folder of its own (`gen-*`); `snapshot.json`, written
last and renamed into place, names the current one, so a restore never pairs
one save's RAM with another's state.
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..paths import cache_dir
from ..util import hash_inputs
from .splat import parse_file

FORMAT = 1
META = "snapshot.json"
BASE_LOG = "base-console.log"  # the saved guest's boot, from QEMU's start to the save
FAILED = "restore-failed"  # the last restore of this key failed (removed by a good one)
UNRESTORABLE = "unrestorable"  # two in a row failed: boot cold, save no more
# Snapshots kept in the cache, the least recently used dropped first: every
# change of kernel, image or QEMU makes new keys, and each save holds about
# 120 MiB (300 MiB for a KASAN kernel).
KEEP = 16


class StartPath(enum.Enum):
    """Which path started a guest."""

    COLD = "cold boot"
    RESTORED = "restored from a snapshot"


class ColdReason(enum.Enum):
    """Why a guest was cold-booted; the value is the progress line's text."""

    ASKED = "--cold-boot"
    MISSING = "no snapshot for this kernel and machine yet"
    STALE = "the snapshot is stale: {detail}"
    FAILED = "restoring the snapshot failed: {detail}"
    UNSAVABLE = "snapshots do not work for this kernel and machine: {detail}"

    def say(self, detail: str) -> str:
        return self.value.format(detail=detail)


@dataclass(frozen=True)
class GuestStart:
    """How a guest started, for reports: the path, and for a cold boot why."""

    path: StartPath
    reason: ColdReason | None = None
    detail: str = ""
    snapshot: str = ""  # the key of the snapshot used or made
    saved: bool = False  # a cold boot that saved a new snapshot

    @property
    def why(self) -> str:
        return self.reason.say(self.detail) if self.reason else ""

    @property
    def path_name(self) -> str:
        """The path as reports write it: "cold" or "restored"."""
        return self.path.name.lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path_name,
            "reason": self.reason.name.lower() if self.reason else None,
            "detail": self.detail,
            "snapshot": self.snapshot,
            "saved": self.saved,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GuestStart":
        """`to_json`'s inverse; a bad path or reason is a KeyError."""
        reason = d.get("reason")
        return cls(
            path=StartPath[str(d["path"]).upper()],
            reason=None if reason is None else ColdReason[reason.upper()],
            detail=str(d.get("detail", "")),
            snapshot=str(d.get("snapshot", "")),
            saved=bool(d.get("saved", False)),
        )

    def describe(self) -> str:
        if self.path is StartPath.RESTORED:
            return f"restored from snapshot {self.snapshot}"
        return f"cold boot ({self.why})" + (", snapshot saved" if self.saved else "")


def _file_identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def snapshot_key(argv: list[str], files: list[Path], qemu_version: str) -> str:
    """The key of a cold guest's snapshot: its QEMU command line with the
    per-guest parts already left out by the caller, the identity of every
    file that line loads (a re-fetched kernel or firmware has a new mtime),
    and QEMU's version."""
    return hash_inputs(FORMAT, qemu_version, tuple(argv), tuple(_file_identity(f) for f in files))


def stamp_of(path: Path) -> dict[str, int]:
    """Size and mtime only: util.Stamp's sha256 would read a 1 GiB RAM file on every restore."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class Snapshot:
    """The snapshot folder of one key; it may not hold a usable save yet."""

    key: str
    root: Path

    @classmethod
    def for_key(cls, key: str) -> "Snapshot":
        return cls(key, cache_dir() / "snapshots" / key)

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def meta(self) -> Mapping[str, Any] | None:
        try:
            data = json.loads((self.root / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def current(self) -> tuple[Path | None, str]:
        """The current save's folder, or None with what is wrong ("" = none yet)."""
        meta = self.meta()
        if meta is None:
            return None, ""
        if meta.get("format") != FORMAT or meta.get("key") != self.key:
            return None, "its record is from another harness version"
        gen = self.root / str(meta.get("gen", ""))
        for name in ("ram", "state"):
            want = meta.get(name)
            try:
                have = stamp_of(gen / name)
            except FileNotFoundError:
                return None, f"its {name} file is missing"
            if have != want:
                return None, f"its {name} file changed after it was saved ({have} vs {want})"
        # Saved by a harness that did not look: a report in the base boot is in
        # every guest restored from it, and a sanitiser that reports once is spent.
        splats = parse_file(gen / BASE_LOG) if (gen / BASE_LOG).is_file() else []
        if splats:
            return None, f"its base boot has a splat ({splats[0].title})"
        return gen, ""

    def used(self) -> None:
        """Record a restore (for `prune`: the least recently used go first)."""
        try:
            os.utime(self.root / META)
        except OSError:
            pass
        (self.root / FAILED).unlink(missing_ok=True)

    def failed(self, gen: Path, why: str) -> None:
        """`gen` failed to restore: stop calling it current (unless a newer
        save has taken its place meanwhile), and remember it.  A key whose
        saves fail twice in a row is `unrestorable`."""
        meta = self.meta()
        if meta and meta.get("gen") == gen.name:
            (self.root / META).unlink(missing_ok=True)
        failures = self.root / FAILED
        if failures.exists():
            (self.root / UNRESTORABLE).write_text(why + "\n")
        failures.write_text(why + "\n")

    def unrestorable(self) -> str:
        """Why this key is not restored any more ("" if it is)."""
        try:
            return "two saves in a row failed to restore; the last: " + (self.root / UNRESTORABLE).read_text().strip()
        except FileNotFoundError:
            return ""

    def new_gen(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"gen-{time.strftime('%Y%m%d-%H%M%S')}-", dir=self.root))

    def commit(self, gen: Path, info: Mapping[str, Any]) -> None:
        """Make `gen` the current save, then drop the older ones."""
        meta = {
            "format": FORMAT,
            "key": self.key,
            "gen": gen.name,
            "ram": stamp_of(gen / "ram"),
            "state": stamp_of(gen / "state"),
            "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            **info,
        }
        tmp = self.root / f".{META}.{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.rename(self.root / META)
        for old in self.root.glob("gen-*"):
            if old != gen:
                # A guest restored from it keeps its mapping: the inode outlives the name.
                shutil.rmtree(old, ignore_errors=True)


def prune(keep: int = KEEP) -> list[Path]:
    """Drop all but the `keep` most recently saved or restored snapshots; the
    folders removed.  A guest running from one keeps its mapping."""
    root = cache_dir() / "snapshots"

    def last_use(d: Path) -> float:
        try:
            return (d / META).stat().st_mtime
        except OSError:
            return 0.0

    folders = sorted((d for d in root.iterdir() if d.is_dir()), key=last_use, reverse=True) if root.is_dir() else []
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return folders[keep:]


def disk_was_full(gen: Path) -> bool:
    """Whether a save into `gen` that failed had filled its file system: QEMU
    says only that cat's pipe broke, and cat could not even write its error
    there.  Less than the largest page run QEMU writes at once is full."""
    try:
        st = os.statvfs(gen)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 4 << 20


def save_uri(path: Path) -> str:
    """A migration target QEMU 7.2 understands (no `file:` before 8.2)."""
    return "exec:cat > " + shlex.quote(str(path))


def load_uri(path: Path) -> str:
    return "exec:cat " + shlex.quote(str(path))


def restore_args(ram: Path, memory_mb: int, share: bool) -> list[str]:
    """QEMU options that put the guest's RAM on `ram` and wait for a state."""
    path = str(ram).replace(",", ",,")  # QEMU's option syntax escapes a comma by doubling it
    return [
        "-object",
        f"memory-backend-file,id=pc.ram,size={memory_mb}M,mem-path={path},share={'on' if share else 'off'}",
        # The default RAM is a backend named pc.ram too, so the state's
        # RAM block matches; defer: capabilities must be set first.
        "-machine",
        "memory-backend=pc.ram",
        "-incoming",
        "defer",
    ]


IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]
