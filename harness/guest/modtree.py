"""A kernel's module tree as the guest sees it: which modules the kernel has
(loadable or built in), a module set's closure under modules.dep, and the
guest's own modules.dep made on the host for the modules it carries."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..errors import HarnessError
from ..kernels import KernelFiles
from ..paths import cache_dir
from ..progress import progress
from ..util import Stamp, cached, damage, hash_inputs, need_tool, private_dir, read_json_object, run_tool


def module_name(path: str | Path) -> str:
    """A module's name from its file's path: `kernel/fs/nls/nls_iso8859-1.ko.xz` is nls_iso8859_1."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep: each module's path (relative to the release's folder) and its dependencies'."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        mod, _, rest = line.partition(":")
        if mod:
            deps[mod] = rest.split()
    return deps


def paths_by_name(text: str) -> dict[str, str]:
    """A modules.dep's module paths by module name."""
    return {module_name(rel): rel for rel in parse_modules_dep(text)}


def _modules_dep(kernel: KernelFiles) -> dict[str, list[str]]:
    return parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())


def _module_names(kernel: KernelFiles) -> tuple[set[str], set[str]]:
    """The kernel's loadable modules and its built-in ones, by name."""
    loadable = {module_name(p) for p in _modules_dep(kernel)}
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = {module_name(p) for p in builtin_file.read_text().split()} if builtin_file.is_file() else set()
    return loadable, builtin


def module_state(kernel: KernelFiles, name: str) -> str | None:
    """ "module" if the kernel has `name` as a loadable module, "builtin" if
    built in, None if neither."""
    loadable, builtin = _module_names(kernel)
    name = name.replace("-", "_")
    return "module" if name in loadable else "builtin" if name in builtin else None


def check_kmods(kernel: KernelFiles, names: tuple[str, ...]) -> tuple[str, ...]:
    """The kernel's own modules asked for by name (`--kmod minix`), normalised;
    a name the kernel has neither as a module nor built in is bad input."""
    if not names:
        return ()
    loadable, builtin = _module_names(kernel)
    out = []
    for raw in names:
        name = raw.strip().replace("-", "_")
        if name.endswith((".ko", ".ko.xz", ".ko.zst")) or "/" in name:
            raise HarnessError(f"--kmod takes a module name (minix), not a file: {raw!r}; use --module for .ko files")
        if name not in loadable and name not in builtin:
            raise HarnessError(f"kernel {kernel.name} ({kernel.release}) has no module {raw!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


def module_closure(kernel: KernelFiles, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to the modules dir) of the modules and all their deps."""
    deps = _modules_dep(kernel)
    by_name = {module_name(p): p for p in deps}
    out: list[str] = []
    for name in names:
        path = by_name.get(name)
        if path is None:
            continue  # built in
        for p in [path, *deps[path]]:
            if p not in out:
                out.append(p)
    return out


def _depmod(kernel: KernelFiles, modules: tuple[Path, ...], in_tree: list[str]) -> dict[str, bytes]:
    """modules.dep & co. for the guest's module set, made on the host (host
    and guest run the same kmod), which saves the guest a depmod at boot."""
    need_tool("depmod", "kmod")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        mdir = Path(tmp) / "lib" / "modules" / kernel.release
        for rel in in_tree:
            (mdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (mdir / rel).symlink_to(kernel.modules_dir / rel)
        (mdir / "extra").mkdir(parents=True, exist_ok=True)
        for ko in modules:
            (mdir / "extra" / ko.name).symlink_to(ko.resolve())
        for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            shutil.copy(kernel.modules_dir / meta, mdir / meta)
        run_tool(["depmod", "-b", tmp, kernel.release], what="depmod for the guest's modules")
        return {p.name: p.read_bytes() for p in sorted(mdir.glob("modules.*"))}


# ---------------------------------------------------------------- the whole tree

# What a guest loads to mount the tree disk (a virtio disk, a squashfs).
TREE_MODULES = ("virtio_blk", "squashfs")


def all_modules(kernel: KernelFiles) -> list[str]:
    """Every loadable module of the kernel, as paths relative to its modules dir."""
    return list(_modules_dep(kernel))


def _fingerprint(kernel: KernelFiles) -> tuple[str, int, int]:
    """The unpacked kernel's marker, written last each time it is installed:
    a kernel made again under the same identity (a derived kernel rebuilt)
    gets a disk of its own."""
    marker = kernel.root.parent / ".unpacked.json"
    st = marker.stat() if marker.is_file() else kernel.modules_dir.stat()
    return (marker.name, st.st_size, st.st_mtime_ns)


def has_tree_disk(kernel: KernelFiles) -> bool:
    """Whether the kernel's guests get its whole module tree on a disk: it has
    an in-tree `kernel/` folder and can mount a squashfs from a virtio disk
    (as modules or built in: Debian's kernels and the debug kernels can)."""
    if not (kernel.modules_dir / "kernel").is_dir():
        return False
    return all(module_state(kernel, name) is not None for name in TREE_MODULES)


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        progress(line)


def tree_disk(kernel: KernelFiles) -> Path | None:
    """A read-only squashfs of the kernel's in-tree modules (its modules dir's
    `kernel/` folder), built once per kernel; None for a kernel whose guests
    cannot mount one.  The guest mounts it over its own `kernel/` folder, so
    `modprobe` of any module, its soft dependencies and the kernel's own
    `request_module()` find what a real system's /lib/modules holds."""
    if not has_tree_disk(kernel):
        return None
    if not shutil.which("mksquashfs") and not shutil.which("mksquashfs", path="/usr/sbin:/sbin"):
        _say_once(
            "image: mksquashfs not found: guests hold only the modules they are given, not the kernel's "
            "whole tree (apt-get install squashfs-tools)"
        )
        return None
    digest = hash_inputs("modtree", kernel.identity, kernel.version, _fingerprint(kernel))
    out = private_dir(cache_dir() / "images") / f"modtree-{digest}"
    out.mkdir(exist_ok=True)
    disk = out / "modules.sqfs"
    meta = out / "modtree.json"

    def reuse() -> Stamp | None:
        if not disk.exists():
            return None
        stamp = Stamp.from_json(read_json_object(meta).get("disk"))
        return stamp if damage(disk, stamp) is None else None

    def build(path: Path) -> Stamp:
        progress(f"image: packing {kernel.release}'s {len(all_modules(kernel))} modules into a disk for its guests")
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        # Fixed times and owners: the same tree makes the same disk.
        run_tool(
            [
                "mksquashfs",
                str(kernel.modules_dir / "kernel"),
                str(tmp),
                "-comp",
                "gzip",
                "-noappend",
                "-all-root",
                "-no-xattrs",
                "-quiet",
                "-no-progress",
                "-mkfs-time",
                "0",
                "-all-time",
                "0",
            ],
            what="mksquashfs of the kernel's modules",
        )
        tmp.rename(path)
        stamp = Stamp.of(path)
        meta.write_text(json.dumps({"kernel": kernel.release, "disk": stamp.to_json()}))
        progress(f"image: module disk {stamp.size // (1024 * 1024)} MiB")
        return stamp

    cached(disk, out / ".lock", reuse, build)
    return disk
