"""Local kernels: a kernel build tree after `make`, or an installed root.

`--kernel PATH` names one.  It becomes a row like any in the kernel table (its
name is the path; `KernelRow.local` holds what was found here), and
kernels.fetch lays it out in the cache the way an unpacked Debian kernel is
laid out (boot/, lib/modules/RELEASE, usr/src/linux-headers-RELEASE), by
symlinks into the tree, so the image, the guest, snapshots and reports take
it unchanged.  Nothing is written into the tree: its modules get a module
tree in the cache (virtme-ng's way, no `modules_install`: the files
`modules.order` names, linked, and depmod run on the host), and out-of-tree
modules build on the host with `make -C TREE M=DIR` and the compiler the
tree was built with.

Before anything boots, the tree's .config is checked against
kconfigs/guest.config: the fragment a user merges is the list checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import HarnessError
from ..paths import data_dir
from ..util import file_sha256, need_tool, read_json_object, run_tool
from .kconfig import parse_config

GUEST_FRAGMENT = data_dir("kconfigs") / "guest.config"
# The fragment's options from this line on are recommended, not checked.
RECOMMENDED_MARK = "# ---- Recommended"
BUILD_TREE = "build tree"
INSTALLED_ROOT = "installed root"
# How a module file may be named: kbuild leaves .ko, modules_install and
# distributions may compress it.
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# Copied into the module tree as they are, if the tree has them.
MODULE_META = ("modules.builtin", "modules.builtin.modinfo")
# QEMU boots an ELF kernel through its PVH entry, which this Xen note names.
XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4
# A kernel's Kconfig never reads these, but make does: the user's shell must
# not turn the host build of a module into a cross or out-of-tree build.
_MAKE_ENV_DROP = ("ARCH", "CROSS_COMPILE", "KBUILD_OUTPUT", "LLVM", "CC", "O")


@dataclass(frozen=True)
class ConfigTrait:
    """What an option of a tree's own config asks of its guests."""

    option: str
    time_factor: float = 1.0
    cmdline: tuple[str, ...] = ()
    boots_elf: bool = True


# The same settings, for the same reasons, as the 6.12-debug row of the kernel table
# (table.py says why each is there).
TRAITS = (
    ConfigTrait("CONFIG_KASAN", 4.0, ("kasan_multi_shot", "no5lvl"), boots_elf=False),
    ConfigTrait("CONFIG_PROVE_LOCKING", 4.0),
)


@dataclass(frozen=True)
class LocalTree:
    """A kernel built outside the harness, as found on disk."""

    path: Path  # absolute: how reports and repro lines name it
    kind: str  # BUILD_TREE or INSTALLED_ROOT
    release: str  # uname -r
    config: Path
    bzimage: Path | None
    vmlinux: Path | None  # an ELF kernel with the PVH entry note, if there is one
    system_map: Path | None
    # (path under lib/modules/RELEASE, the file): what the module tree links.
    modules: tuple[tuple[str, Path], ...]
    meta: tuple[Path, ...]  # MODULE_META files the tree has
    kbuild_dir: Path | None  # where `make M=` builds out-of-tree modules
    cc_version_text: str  # CONFIG_CC_VERSION_TEXT: the compiler it was built with
    time_factor: float = 1.0
    cmdline: tuple[str, ...] = ()

    @property
    def boot_image(self) -> Path:
        image = self.vmlinux or self.bzimage
        assert image is not None  # discovery refuses a tree without one
        return image


# ---------------------------------------------------------------- what `--kernel` names


def looks_like_path(text: str) -> bool:
    """A `--kernel` item that is not a spec name but a folder: it has a slash,
    starts with ~ or ., or names an existing folder."""
    return "/" in text or text.startswith(("~", ".")) or Path(text).is_dir()


def absolute(text: str) -> Path:
    """The path as reports name it: absolute and normalised, links kept."""
    return Path(os.path.normpath(Path(text).expanduser().absolute()))


def discover(text: str) -> LocalTree:
    """The kernel at PATH, checked for what the guest needs, or one line
    saying what is wrong with it (nothing has booted yet)."""
    path = absolute(text)
    if not path.exists():
        raise HarnessError(f"kernel {text}: no such folder")
    if not path.is_dir():
        raise HarnessError(f"kernel {path}: not a folder; give a kernel build tree or an installed root")
    for finder in (_build_tree, _installed_root):
        tree = finder(path)
        if tree is not None:
            return tree
    raise HarnessError(
        f"kernel {path} is neither a kernel build tree (no .config) nor an installed root "
        "(no boot/vmlinuz-*); give a tree after `make`, or what `make install modules_install` "
        "made under INSTALL_PATH/INSTALL_MOD_PATH"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        raise HarnessError(f"cannot read {path}: {e.strerror}") from None


def _build_tree(path: Path) -> LocalTree | None:
    """A tree after `make` (or its O= output folder), or None if not one."""
    if not (path / ".config").is_file():
        return None
    label = f"kernel tree {path}"
    release_file = path / "include" / "config" / "kernel.release"
    if not release_file.is_file():
        raise HarnessError(f"{label} is configured but not built (no include/config/kernel.release): run make")
    release = _read(release_file).strip()
    config = parse_config(_read(path / ".config"))
    bzimage = path / "arch" / "x86" / "boot" / "bzImage"
    vmlinux = path / "vmlinux"
    elf = vmlinux if boots_elf(config) and vmlinux.is_file() and has_pvh_note(vmlinux) else None
    if elf is None and not bzimage.is_file():
        raise HarnessError(
            f"{label} has no built image (no arch/x86/boot/bzImage, and no vmlinux with a PVH entry note): run make"
        )
    check_guest_config(config, label)  # so CONFIG_MODULES=y from here on
    order = path / "modules.order"
    if not order.is_file():
        raise HarnessError(f"{label} has no modules.order: run make (it builds the modules too)")
    modules = modules_from_order(path, _read(order), label)
    system_map = path / "System.map"
    return LocalTree(
        path,
        BUILD_TREE,
        release,
        path / ".config",
        bzimage if bzimage.is_file() else None,
        elf,
        system_map if system_map.is_file() else None,
        modules,
        tuple(path / m for m in MODULE_META if (path / m).is_file()),
        path,
        _cc_text(config),
        *_traits(config),
    )


def _installed_root(path: Path) -> LocalTree | None:
    """What `make install modules_install` made under a folder, or None."""
    images = {
        p.name.removeprefix("vmlinuz-"): p
        for p in sorted((path / "boot").glob("vmlinuz-*"))
        if not p.name.endswith(".old")
    }
    moddirs = {
        p.name: p
        for base in (path / "lib" / "modules", path / "usr" / "lib" / "modules")
        if base.is_dir()
        for p in sorted(base.iterdir())
        if p.is_dir()
    }
    if not images and not moddirs:
        return None
    label = f"installed root {path}"
    if not images:
        raise HarnessError(
            f"{label} has modules ({', '.join(moddirs)}) but no boot/vmlinuz-*: run make install INSTALL_PATH=.../boot"
        )
    both = sorted(set(images) & set(moddirs)) or sorted(images)
    if len(both) > 1:
        raise HarnessError(f"{label} holds several kernels ({', '.join(both)}); give a root with one")
    release = both[0]
    moddir = moddirs.get(release)
    build = moddir / "build" if moddir is not None else None
    config_file = next(
        (
            c
            for c in (path / "boot" / f"config-{release}", build / ".config" if build else None)
            if c is not None and c.is_file()
        ),
        None,
    )
    if config_file is None:
        raise HarnessError(
            f"{label} has no boot/config-{release} (nor a build link to its tree's .config); "
            "copy the tree's .config there"
        )
    config = parse_config(_read(config_file))
    check_guest_config(config, label)  # so CONFIG_MODULES=y from here on
    if moddir is None:
        raise HarnessError(f"{label} has no lib/modules/{release}: run make modules_install INSTALL_MOD_PATH=...")
    modules = tuple(_walk_modules(moddir))
    vmlinux = path / "boot" / f"vmlinux-{release}"
    system_map = path / "boot" / f"System.map-{release}"
    kbuild = build if build is not None and (build / "Makefile").is_file() else None
    return LocalTree(
        path,
        INSTALLED_ROOT,
        release,
        config_file,
        images[release],
        vmlinux if boots_elf(config) and vmlinux.is_file() and has_pvh_note(vmlinux) else None,
        system_map if system_map.is_file() else None,
        modules,
        tuple(moddir / m for m in MODULE_META if (moddir / m).is_file()),
        kbuild.resolve() if kbuild else None,
        _cc_text(config),
        *_traits(config),
    )


def _walk_modules(moddir: Path) -> list[tuple[str, Path]]:
    out = []
    for top, dirs, names in os.walk(moddir):  # not into the build/source links
        dirs.sort()
        for name in sorted(names):
            if name.endswith(MODULE_SUFFIXES):
                file = Path(top) / name
                out.append((str(file.relative_to(moddir)), file))
    return out


def _cc_text(config: Mapping[str, str]) -> str:
    return config.get("CONFIG_CC_VERSION_TEXT", "").strip('"')


def _traits(config: Mapping[str, str]) -> tuple[float, tuple[str, ...]]:
    on = [t for t in TRAITS if config.get(t.option) == "y"]
    return max((t.time_factor for t in on), default=1.0), tuple(a for t in on for a in t.cmdline)


def boots_elf(config: Mapping[str, str]) -> bool:
    """Whether nothing in the config keeps the kernel from booting through its PVH entry."""
    return all(t.boots_elf for t in TRAITS if config.get(t.option) == "y")


# ---------------------------------------------------------------- modules.order


def modules_from_order(tree: Path, order: str, label: str = "kernel tree") -> tuple[tuple[str, Path], ...]:
    """The modules `modules.order` lists (`.ko` up to 6.1, `.o` from 6.2 on;
    a compressed file is taken too), each under kernel/ in the module tree as
    modules_install would put it.  A listed module that is not there means
    the tree is half built: one line saying so."""
    out: dict[str, Path] = {}
    for line in order.split():
        rel = line.removeprefix("./").removeprefix("kernel/")
        stem = rel[:-2] if rel.endswith(".o") else rel[:-3] if rel.endswith(".ko") else None
        if stem is None:
            raise HarnessError(f"{label}: modules.order names {line!r}, not a .o or .ko")
        found = next((tree / (stem + s) for s in MODULE_SUFFIXES if (tree / (stem + s)).is_file()), None)
        if found is None:
            raise HarnessError(f"{label}: modules.order names {line} but there is no {stem}.ko: run make")
        out.setdefault(f"kernel/{stem}{found.name[len(Path(stem).name) :]}", found)
    return tuple(out.items())


# ---------------------------------------------------------------- the guest's needs


def guest_needs(fragment: str) -> dict[str, str]:
    """The options of the guest fragment that are checked (those above its
    RECOMMENDED_MARK line)."""
    return parse_config(fragment.split("\n" + RECOMMENDED_MARK, 1)[0])


def unmet_needs(config: Mapping[str, str], needs: Mapping[str, str]) -> list[str]:
    """What `config` lacks of `needs`, each named: "=y" is met by a module
    too (the guest loads it from the tree's modules), "is not set" by
    anything but y and m."""
    out = []
    for option, want in needs.items():
        have = config.get(option, "n")
        if want == "n":
            if have in ("y", "m"):
                out.append(f"{option}={have} (must not be set)")
        elif want in ("y", "m"):
            if have not in ("y", "m"):
                out.append(option)
        elif have != want:
            out.append(f"{option}={want} (have {have})")
    return out


def check_guest_config(config: Mapping[str, str], label: str, fragment: Path = GUEST_FRAGMENT) -> None:
    missing = unmet_needs(config, guest_needs(_read(fragment)))
    if missing:
        raise HarnessError(
            f"{label}: its .config lacks what the guest needs: {', '.join(missing)} (merge "
            f"{fragment} with the kernel's scripts/kconfig/merge_config.sh, then make "
            "olddefconfig and make; see docs/kernels.md)"
        )


# ---------------------------------------------------------------- the PVH note


def has_pvh_note(path: Path) -> bool:
    """Whether an ELF64 kernel carries Xen's PHYS32_ENTRY note in a PT_NOTE
    segment, which QEMU needs to boot it directly (CONFIG_PVH)."""
    try:
        with open(path, "rb") as fh:
            ehdr = fh.read(64)
            if len(ehdr) < 64 or ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
                return False
            (phoff,) = struct.unpack_from("<Q", ehdr, 32)
            phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
            fh.seek(phoff)
            phdrs = fh.read(phentsize * phnum)
            for i in range(phnum):
                p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
                if p_type != PT_NOTE or p_filesz > 1 << 20:
                    continue
                fh.seek(p_offset)
                if _xen_entry_note(fh.read(p_filesz)):
                    return True
    except (OSError, struct.error):
        return False
    return False


def _xen_entry_note(notes: bytes) -> bool:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, at)
        name = notes[at + 12 : at + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


# ---------------------------------------------------------------- version: the tree's content


def _stat_key(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def content_version(tree: LocalTree, memo_dir: Path) -> str:
    """ "local-" and a hash of the release, the boot image, the config and
    every module's path and bytes: a rebuilt tree is a new kernel (a new
    snapshot, new module builds).  Hashed again only when a file's stat
    changed since the last time (remembered per tree under `memo_dir`)."""
    named = [("image", tree.boot_image), ("config", tree.config), *tree.modules, *[(m.name, m) for m in tree.meta]]
    key = _stat_key([f for _, f in named])
    memo = memo_dir / f"{hashlib.sha256(str(tree.path).encode()).hexdigest()[:16]}.json"
    known = read_json_object(memo)
    if known.get("stat") == key and isinstance(known.get("version"), str):
        return known["version"]
    h = hashlib.sha256(tree.release.encode())
    for name, f in named:
        h.update(f"\0{name}\0{file_sha256(f)}".encode())
    version = f"local-{h.hexdigest()[:16]}"
    memo_dir.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": str(tree.path), "stat": key, "version": version}))
    os.replace(tmp, memo)
    return version


def describe(tree: LocalTree) -> str:
    """What reports say of the tree beside its path and release: its kind and,
    for a git tree, `git describe` (with -dirty for uncommitted changes)."""
    what = tree.kind
    if (tree.path / ".git").exists() and shutil.which("git"):
        described = _git(tree.path, "describe", "--tags", "--always")
        if described:
            # git status, not describe --dirty: that rewrites the tree's index.
            dirty = _git(tree.path, "status", "--porcelain", "--untracked-files=no")
            what += f", git {described}{'-dirty' if dirty else ''}"
    return what


def _git(path: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C"),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


# ---------------------------------------------------------------- the layout in the cache


def lay_out(tree: LocalTree, root: Path) -> None:
    """The tree as an unpacked kernel under `root`: boot files and modules
    linked, the config copied, modules.order written, depmod run on the host."""
    need_tool("depmod", "kmod")
    rel = tree.release
    boot = root / "boot"
    boot.mkdir(parents=True)
    shutil.copyfile(tree.config, boot / f"config-{rel}")
    for name, target in (("vmlinuz", tree.bzimage), ("vmlinux", tree.vmlinux), ("System.map", tree.system_map)):
        if target is not None:
            (boot / f"{name}-{rel}").symlink_to(target)
    mdir = root / "lib" / "modules" / rel
    mdir.mkdir(parents=True)
    for dest, target in tree.modules:
        (mdir / dest).parent.mkdir(parents=True, exist_ok=True)
        (mdir / dest).symlink_to(target)
    for meta in tree.meta:
        shutil.copyfile(meta, mdir / meta.name)
    (mdir / "modules.order").write_text("".join(f"{dest}\n" for dest, _ in tree.modules))
    if tree.kbuild_dir is not None:
        (root / "usr" / "src").mkdir(parents=True)
        (root / "usr" / "src" / f"linux-headers-{rel}").symlink_to(tree.kbuild_dir)
    argv: list[str | os.PathLike[str]] = ["depmod", "-b", root]
    if tree.system_map is not None:
        argv += ["-F", tree.system_map]
    run_tool([*argv, rel], what=f"depmod of {tree.path}'s modules")


# ---------------------------------------------------------------- out-of-tree modules on the host


@dataclass(frozen=True)
class Compiler:
    path: str
    version_line: str  # the first line of its --version

    @property
    def identity(self) -> str:
        return f"{Path(self.path).name}-{hashlib.sha256(self.version_line.encode()).hexdigest()[:8]}"


_CC_TEXT = re.compile(r"^(?P<prog>\S+) \(.*\) (?P<version>\d+\.\d+(?:\.\d+)?)(?: \d+)?$")


def version_line(compiler: str) -> str:
    """The first line of `compiler --version`, "" if it does not run."""
    try:
        proc = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = proc.stdout.splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else ""


def find_compiler(
    text: str,
    label: str,
    which: Callable[[str], str | None] = shutil.which,
    version_of: Callable[[str], str] = version_line,
) -> Compiler:
    """The host's compiler that built a tree, from its CONFIG_CC_VERSION_TEXT
    ("gcc (Debian 12.2.0-14) 12.2.0"): the program it names, then gcc-MAJOR,
    then gcc; the same --version line wins over the same version number.
    None there: one line naming what to install."""
    m = _CC_TEXT.match(text)
    if not m or "gcc" not in m["prog"]:
        raise HarnessError(
            f"{label} was built with {text or 'an unnamed compiler (no CONFIG_CC_VERSION_TEXT)'}"
            "; out-of-tree modules are built for gcc-built trees only"
        )
    version = m["version"]
    major = version.split(".")[0]
    found: list[str] = []
    near: Compiler | None = None
    for name in dict.fromkeys((m["prog"], f"gcc-{major}", "gcc")):
        path = which(name)
        if path is None:
            continue
        line = version_of(path)
        have = _CC_TEXT.match(line)
        found.append(f"{name} {have['version'] if have else '?'}")
        if line.split(" ", 1)[-1] == text.split(" ", 1)[-1]:
            return Compiler(path, line)
        if have and have["version"] == version and near is None:
            near = Compiler(path, line)
    if near is not None:
        return near
    raise HarnessError(
        f"{label} was built with {text} and this host has no gcc {version} "
        f"({', '.join(found) or 'no gcc at all'}); install gcc-{major}"
    )


def make_modules(tree: LocalTree, src: Path, jobs: int, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """kbuild's `modules` of the folder `src` against the tree, on the host,
    with the tree's compiler; stdout and stderr in one stream."""
    label = f"{tree.kind} {tree.path}"
    if tree.kbuild_dir is None:
        raise HarnessError(
            f"{label} has no build tree to build modules against (lib/modules/{tree.release}/build "
            "does not lead to one); give the build tree itself"
        )
    cc = find_compiler(tree.cc_version_text, label)
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_ENV_DROP}
    argv = ["make", f"-j{jobs}", "-C", str(tree.kbuild_dir), f"M={src}", f"CC={cc.path}", *extra, "modules"]
    try:
        return subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "LC_ALL": "C"}
        )
    except OSError as e:
        raise HarnessError(f"cannot run make for {label}: {e.strerror}") from None


def build_identity(tree: LocalTree, version: str) -> str:
    """What a module built against the tree depends on: the tree's content
    (its version) and the compiler."""
    return f"host-{find_compiler(tree.cc_version_text, f'{tree.kind} {tree.path}').identity}-{version}"
