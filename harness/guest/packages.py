"""Debian packages in the guest: `--guest-packages bash,strace,python3-minimal`.

The names are resolved by apt itself on the harness's own catalogue
(`kernels/apt/`), never the host's lists or installed packages:
`apt-get install --simulate --no-install-recommends` with the catalogue's
empty dpkg status and preferences that admit the guest's release only
(bookworm with its -updates and -security suites; every other suite is
pinned to -1).  The answer is the names with all they Depend and Pre-Depend
on, down to libc6; Recommends are left out.  The exact set (a name=version
list) is remembered per lists generation, so a warm run asks apt nothing.

The .debs are unpacked, without their maintainer scripts, into a layer: a
newc archive that image.py appends to the base initramfs, so the kernel
unpacks it over the base at boot, and a guest with packages is snapshotted
and restored like the plain one (its initramfs is a file of its own, so its
snapshot key is too).  A layer is cached by the exact set and holds:

- what the packages ship, but documentation, manual pages and translations (JUNK);
- never a path of the guest's own machinery (image.py's HARNESS_OWNED: init,
  keys, users, busybox, kmod, dropbear): packages add tools, the harness's stay;
- the merged /usr a bookworm system has: the base guest keeps /bin and /usr/bin
  apart and bookworm's packages ship into both (bash in /bin, python3 in
  /usr/bin), so each program also gets a symlink in the other half
  (`/usr/bin/bash`, `/bin/python3`), replacing busybox's applet of that name
  there: a real program wins over an applet in both halves.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping

from ..errors import HarnessError
from ..kernels import DEFAULT_RELEASE, apt
from ..paths import cache_dir
from ..progress import progress
from ..util import (
    Stamp,
    cached,
    damage,
    file_lock,
    file_sha256,
    hash_inputs,
    last_line,
    need_tool,
    read_json_object,
    run_tool,
    write_private,
)
from .cpio import Cpio

RELEASE = DEFAULT_RELEASE  # the base guest's user space is from there too
NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # a Debian package name (policy 5.6.1)
# Left out of a layer: documentation, manual pages, translations and what only package tools read.
JUNK = (
    "usr/share/doc",
    "usr/share/doc-base",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/common-licenses",
    "usr/share/gtk-doc",
)
# The halves of a merged /usr: a program shipped into one gets a symlink in the other.
MERGED = (("bin", "usr/bin"), ("sbin", "usr/sbin"))
# Part of every layer's key, with the rows above: bump it when the way a layer
# is made changes in a way they do not show.
LAYER_RECIPE = 1
PIN_PRIORITY = 990  # the release's own suites; every other suite gets -1 (never)


def parse_names(items: str | Iterable[str]) -> tuple[str, ...]:
    """`bash,strace` or `bash python3-minimal` (a string, the values of
    several options, an ini line's words) -> the sorted names, each once.  An
    empty element (`bash,`) or a word that is no package name (apt would take
    `-s` for an option) is bad input."""
    names: set[str] = set()
    for item in (items,) if isinstance(items, str) else items:
        for piece in item.split(","):
            words = piece.split()
            if not words:
                raise HarnessError(f"--guest-packages {item!r} has an empty element; give a comma list without blanks")
            for word in words:
                if not NAME.fullmatch(word):
                    raise HarnessError(
                        f"--guest-packages: {word!r} is not a Debian package name "
                        "(lower-case letters, digits, + - .; e.g. python3-minimal)"
                    )
                names.add(word)
    return tuple(sorted(names))


_INST = re.compile(r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[[^\]]*\] )?\((?P<version>\S+) ", re.M)


def parse_simulation(text: str) -> list[tuple[str, str]]:
    """(name, version) of every `Inst` line of `apt-get install --simulate`, by name."""
    return sorted({(m["name"], m["version"]) for m in _INST.finditer(text)})


def preferences(release: str) -> str:
    """apt preferences that admit `release`'s suites only (the newest of them wins)."""
    stanzas = [
        f"Package: *\nPin: release n={suite}\nPin-Priority: {PIN_PRIORITY}\n" for suite in apt.suites_of(release)
    ]
    return "\n".join([*stanzas, "Package: *\nPin: release *\nPin-Priority: -1\n"])


def apt_error(proc: Any) -> str:
    """apt's first `E:` line, without the `E: `; else its last line."""
    for line in (proc.stderr + "\n" + proc.stdout).splitlines():
        if line.startswith("E: "):
            return line[3:].strip()
    return last_line(proc.stderr) or last_line(proc.stdout) or f"exit status {proc.returncode}"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


# ---------------------------------------------------------------- the resolved set


class GuestPackage(apt.Deb):
    """A package of the guest's layer: a Deb with no more to it."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GuestPackage":
        return cls(*cls.fields_of(d))


@dataclass(frozen=True)
class PackageSet:
    """The names asked for and the exact packages they came to, by name."""

    asked: tuple[str, ...]
    packages: tuple[GuestPackage, ...]

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(p.pin for p in self.packages)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.packages)

    def key(self, keep_out: Collection[str]) -> str:
        """The key of its layer: the exact set and the rules the layer is made by."""
        return hash_inputs("guest-packages", LAYER_RECIPE, JUNK, MERGED, tuple(sorted(keep_out)), self.pins)

    def to_json(self) -> list[dict[str, object]]:
        return [p.to_json() for p in self.packages]

    @classmethod
    def from_json(cls, asked: tuple[str, ...], d: object) -> "PackageSet":
        if not isinstance(d, list) or not d:
            raise ValueError("not a package list")
        return cls(asked, tuple(GuestPackage.from_json(p) for p in d))


def _folder() -> Path:
    return cache_dir() / "guest-packages"


def resolve(names: str | Iterable[str]) -> PackageSet:
    """The names and everything they depend on in the guest's release, as
    exact packages: apt's answer, remembered per lists generation."""
    asked = parse_names(names)
    if not asked:
        return PackageSet((), ())
    cat = apt.update()
    folder = _folder()
    request = " ".join(asked)
    with file_lock(folder / "resolved.lock"):
        generation = os.readlink(cat.lists)
        memo = read_json_object(folder / "resolved.json")
        sets = memo.get("sets") if memo.get("lists") == generation else None
        sets = sets if isinstance(sets, dict) else {}
        try:
            return PackageSet.from_json(asked, sets[request])
        except (KeyError, TypeError, ValueError):
            pass
        found = _ask_apt(cat, asked)
        sets[request] = found.to_json()
        tmp = folder / f".resolved.json.{os.getpid()}"
        tmp.write_text(json.dumps({"lists": generation, "sets": sets}, indent=1))
        tmp.replace(folder / "resolved.json")
    return found


def _ask_apt(cat: apt.Catalogue, asked: tuple[str, ...]) -> PackageSet:
    folder = _folder()
    prefs, parts = folder / "apt-preferences", folder / "apt-preferences.d"
    parts.mkdir(parents=True, exist_ok=True)
    prefs.write_text(preferences(RELEASE))
    proc = run_tool(
        cat.argv(
            "apt-get",
            "install",
            "--simulate",
            "-q",
            "--no-install-recommends",
            "-o",
            f"Dir::Etc::Preferences={prefs}",
            "-o",
            f"Dir::Etc::PreferencesParts={parts}",
            *asked,
        ),
        check=False,
        what="apt-get install --simulate",
    )
    if proc.returncode != 0:
        raise HarnessError(
            f"--guest-packages {','.join(asked)}: not installable from Debian {RELEASE}: {apt_error(proc)}"
        )
    pins = parse_simulation(proc.stdout)
    stanzas = cat.stanzas(pins)
    unknown = [f"{n}={v}" for n, v in pins if (n, v) not in stanzas]
    if unknown:
        raise HarnessError(
            f"guest packages {', '.join(unknown)} are not in the catalogue; try: python -m harness kernels --refresh"
        )
    found = PackageSet(asked, tuple(GuestPackage.from_fields(stanzas[pin]) for pin in pins))
    # Said once it worked: a refusal is one line.
    progress(
        f"guest packages: {' '.join(asked)} with their dependencies: {len(pins)} packages of Debian "
        f"{RELEASE}, {_mib(found.size)}"
    )
    return found


def _deb_ok(path: Path, pkg: GuestPackage) -> bool:
    try:
        if path.stat().st_size != pkg.size:
            return False
    except FileNotFoundError:
        return False
    return not pkg.sha256 or file_sha256(path) == pkg.sha256


def download(pset: PackageSet) -> list[Path]:
    """The set's .debs, fetched into the cache with the catalogue's apt (the
    ones not there yet) and checked against the catalogue's size and SHA256."""
    dest = _folder() / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    with file_lock(dest / ".lock"):
        todo = [p for p in pset.packages if not _deb_ok(dest / p.deb_name, p)]
        if todo:
            progress(
                f"guest packages: downloading {len(todo)} packages, {_mib(sum(p.size for p in todo))}: "
                + " ".join(p.pin for p in todo)
            )
            cat = apt.update()
            proc = run_tool(
                cat.argv("apt-get", "download", "-q", *[p.pin for p in todo]),
                cwd=dest,
                check=False,
                what="apt-get download",
            )
            bad = [p for p in todo if not _deb_ok(dest / p.deb_name, p)]
            for p in bad:
                (dest / p.deb_name).unlink(missing_ok=True)
            if proc.returncode != 0:
                raise HarnessError(
                    f"apt-get download of guest packages failed: {apt_error(proc)} "
                    f"(archive {cat.mirrors.main}; is it reachable?)"
                )
            if bad:
                raise HarnessError(
                    f"downloaded {bad[0].deb_name} does not match the catalogue's size and "
                    "SHA256; try: python -m harness kernels --refresh"
                )
    return [dest / p.deb_name for p in pset.packages]


# ---------------------------------------------------------------- the layer


@dataclass(frozen=True)
class Layer:
    """A set's packages as an initramfs archive to append to a base one."""

    path: Path
    stamp: Stamp
    key: str
    packages: PackageSet


def _left_out(rel: str, keep_out: Collection[str]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in (*JUNK, *keep_out))


def layer_archive(root: Path, keep_out: Collection[str]) -> bytes:
    """The unpacked packages under `root` as one newc archive (see the module's
    docstring for what goes in); `keep_out`: paths relative to / the packages
    may not write."""
    cpio = Cpio()
    shipped: dict[str, set[str]] = {half: set() for pair in MERGED for half in pair}

    def add(rel: str, path: Path) -> bool:
        """One entry; False for a directory to descend into."""
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            cpio.symlink(rel, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            cpio.file(rel, path.read_bytes(), stat.S_IMODE(st.st_mode))
        elif stat.S_ISDIR(st.st_mode):
            cpio.dir(rel, stat.S_IMODE(st.st_mode))
            return False
        else:
            return True  # no package ships a device or a fifo worth having
        parent, _, name = rel.rpartition("/")
        if parent in shipped:
            shipped[parent].add(name)
        return True

    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        base = here.relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        descend = []
        for name in sorted(dirnames):  # a symlink to a folder is listed here too
            rel = prefix + name
            if not _left_out(rel, keep_out) and not add(rel, here / name):
                descend.append(name)
        dirnames[:] = descend
        for name in sorted(filenames):
            if not _left_out(prefix + name, keep_out):
                add(prefix + name, here / name)
    for one, other in MERGED:
        for src, dst in ((one, other), (other, one)):
            for name in sorted(shipped[src] - shipped[dst]):
                if not _left_out(f"{dst}/{name}", keep_out):
                    cpio.symlink(f"{dst}/{name}", f"/{src}/{name}")
    return cpio.finish()


def layer(pset: PackageSet, keep_out: Collection[str]) -> Layer:
    """The set's layer, made once per exact set (and layer rules)."""
    key = pset.key(keep_out)
    out = _folder() / "layers" / key
    final, meta = out / "layer.cpio", out / "layer.json"

    def reuse() -> Layer | None:
        stamp = Stamp.from_json(read_json_object(meta).get("layer"))
        if not final.exists() or stamp is None:
            return None
        why = damage(final, stamp)
        if why is not None:
            progress(f"guest packages: cached layer {why}; making it again")
            return None
        return Layer(final, stamp, key, pset)

    def build(path: Path) -> Layer:
        need_tool("dpkg-deb", "dpkg")
        debs = download(pset)
        with tempfile.TemporaryDirectory(dir=_folder()) as tmp:
            for deb in debs:
                run_tool(
                    ["dpkg-deb", "-x", deb, tmp], what=f"dpkg-deb -x {deb.name}", fix=f"delete {deb} and run again"
                )
            data = layer_archive(Path(tmp), keep_out)
        write_private(path, data)
        stamp = Stamp.of(path)
        # Written last: the manifest publishes the layer.
        meta.write_text(json.dumps({"packages": list(pset.pins), "layer": stamp.to_json()}, indent=1))
        progress(f"guest packages: layer of {len(pset.packages)} packages, {_mib(stamp.size)} unpacked")
        return Layer(path, stamp, key, pset)

    out.mkdir(parents=True, exist_ok=True)
    # In place: the folder is the key's and holds its lock; the manifest is written last.
    return cached(final, out / ".lock", reuse, build)
