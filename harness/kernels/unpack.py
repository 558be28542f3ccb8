"""A kernel row to its unpacked files in the cache: Debian's packages
downloaded (apt/) and unpacked with `dpkg -x` into a private folder per ABI,
a kernel built here from source (debugkernel.py), or a local tree laid out
(localtree.py); later calls check the cached copy and repair or redo it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..errors import HarnessError
from ..paths import cache_dir
from ..progress import progress
from ..util import cached as cached_artifact
from ..util import need_tool, read_json_object, run_tool, stamps_of
from . import apt, debugkernel, derive, localtree
from .apt import ResolvedKernel, resolve
from .files import KernelFiles, files_of, root_of
from .repair import cached, checked_files, damage_of_kernel, marker, repair, write_marker
from .table import ROWS, KernelRow
from .vmlinux import extract_vmlinux


def fetch(spec: KernelRow, quiet: bool = False) -> KernelFiles:
    """Download and unpack a kernel once; later calls check and return the
    cached copy.  A local tree is laid out in the cache instead."""
    if spec.local is not None:
        return _fetch_local(spec, spec.local, quiet)
    res = resolve(spec)
    root_of(res).mkdir(parents=True, exist_ok=True)
    files = files_of(res)

    def reuse() -> KernelFiles | None:
        if cached(res) and spec.source is not None and not debugkernel.tree_ready(spec, res):
            progress(f"kernel {spec.name}: its build tree is gone from the build root; building it again")
            marker(res).unlink()
        if cached(res):
            reason = damage_of_kernel(files)
            if reason is None:
                if not quiet:
                    progress(f"kernel {spec.name}: {res.abi} ({res.version}) already cached")
                return files
            progress(f"kernel {spec.name}: cached {res.abi} cannot be used: {reason}; repairing")
            if spec.source is None and repair(res, files):
                progress(f"kernel {spec.name}: {res.abi} repaired (vmlinux extracted again)")
                return files
            marker(res).unlink()
        return None

    # In place: the folder is per ABI and holds its lock; the marker
    # (.unpacked.json, written last) is what publishes the unpacked kernel.
    return cached_artifact(root_of(res) / "root", root_of(res) / ".lock", reuse, lambda root: _unpack(spec, res))


def _build(spec: KernelRow, res: ResolvedKernel) -> KernelFiles:
    """A kernel built here from Debian's source (debugkernel.py)."""
    need_tool("depmod", "kmod")
    debugkernel.build(spec, res, root_of(res) / "root")
    if spec.base is not None:
        (root_of(res) / "derived.json").write_text(json.dumps(derive.record(spec)))
    files = files_of(res)
    run_tool(["depmod", "-b", files.root, res.abi], what="depmod")
    write_marker(res)
    progress(f"kernel {spec.name}: {res.abi} ready")
    return files


def _unpack(spec: KernelRow, res: ResolvedKernel) -> KernelFiles:
    if spec.source is not None:
        return _build(spec, res)
    need_tool("dpkg", "dpkg")
    need_tool("depmod", "kmod")
    got, debs = apt.fetch(spec)
    if got.abi != res.abi:  # the archive did not serve the newest: an older ABI, its own folder
        return fetch(spec, quiet=True)
    root = root_of(res) / "root"
    shutil.rmtree(root, ignore_errors=True)
    for deb in (d for paths in debs.values() for d in paths):
        progress(f"kernel {spec.name}: unpacking {deb.name}")
        run_tool(["dpkg", "-x", deb, root], what=f"dpkg -x {deb.name}", fix=f"delete {deb} and fetch again")
    files = files_of(res)
    merge_usr_layout(root, res.abi)
    _fix_headers(files)
    # The package has no modules.dep (depmod runs at install time): make it.
    run_tool(["depmod", "-b", root, res.abi], what="depmod")
    extract_vmlinux(files.vmlinuz, files.vmlinux)
    write_marker(res)
    progress(f"kernel {spec.name}: {res.abi} ready")
    return files


def _fetch_local(spec: KernelRow, tree: localtree.LocalTree, quiet: bool) -> KernelFiles:
    """A local tree as an unpacked kernel: one folder per content version
    (localtree.content_version), made once, its marker like a Debian
    kernel's, so a tree changed since is seen as damage at boot."""
    base = cache_dir() / "kernels"
    version = localtree.content_version(tree, base / "local-trees")
    folder = base / version
    files = KernelFiles(spec, tree.release, version, folder / "root", localtree.describe(tree))
    said = f"kernel {spec.name}: {files.describe}, release {tree.release} ({version})"

    def reuse() -> KernelFiles | None:
        # Laid out from this path: a copy of the tree elsewhere links elsewhere.
        if read_json_object(folder / ".unpacked.json").get("path") == spec.name and damage_of_kernel(files) is None:
            if not quiet:
                progress(f"{said}, already laid out")
            return files
        return None

    def lay_out(tmp: Path) -> KernelFiles:
        progress(f"{said}: laying out {len(tree.modules)} modules in the cache")
        if tree.vmlinux is None:
            progress(
                f"kernel {spec.name}: booting {tree.boot_image.relative_to(tree.path)}, not the ELF through "
                "its PVH entry, which boots faster under TCG (needs CONFIG_PVH=y, and no KASAN)"
            )
        localtree.lay_out(tree, tmp / "root")
        rels = [rel for rel in checked_files(tree.release) if (tmp / "root" / rel).exists()]
        data = {"path": spec.name, "version": version, "files": stamps_of(tmp / "root", rels)}
        (tmp / ".unpacked.json").write_text(json.dumps(data, indent=1))
        return files

    return cached_artifact(folder, base / f"{version}.lock", reuse, lay_out, tmp=base / f"{version}.tmp")


def merge_usr_layout(root: Path, abi: str) -> None:
    """One layout for every suite: modules under lib/modules, the kernel and
    its config in boot/.  trixie and later install modules to /usr/lib/modules;
    sid and experimental also keep vmlinuz and config there (split packages)."""
    usr_mods = root / "usr" / "lib" / "modules" / abi
    if usr_mods.is_dir() and not (root / "lib").exists():
        (root / "lib").symlink_to("usr/lib")
    boot = root / "boot"
    boot.mkdir(exist_ok=True)
    for name in ("vmlinuz", "config", "System.map"):
        if (usr_mods / name).is_file() and not (boot / f"{name}-{abi}").exists():
            (boot / f"{name}-{abi}").symlink_to(Path("..", "usr", "lib", "modules", abi, name))


def _fix_headers(files: KernelFiles) -> None:
    """Make the headers usable from the cache: no absolute paths into /usr/src."""
    makefile = files.headers_dir / "Makefile"
    text = makefile.read_text()
    fixed = re.sub(
        r"^include /usr/src/([^/\s]+)/Makefile$",
        r"include $(dir $(lastword $(MAKEFILE_LIST)))../\1/Makefile",
        text,
        flags=re.M,
    )
    makefile.write_text(fixed)
    for link in files.root.rglob("*"):
        if link.is_symlink() and str(link.readlink()).startswith("/"):
            target = files.root / str(link.readlink()).lstrip("/")
            link.unlink()
            link.symlink_to(
                Path(*([".."] * (len(link.relative_to(files.root).parts) - 1))) / target.relative_to(files.root)
            )


def status(refresh: bool = False) -> list[tuple[KernelRow, ResolvedKernel | None, str]]:
    """Every spec with its resolution (or the reason it failed) for `kernels`."""
    cache_dir()  # an unusable cache folder is one error, not one per row
    if refresh:
        apt.update(refresh=True)
    out: list[tuple[KernelRow, ResolvedKernel | None, str]] = []
    for spec in ROWS.values():
        try:
            res = resolve(spec)
            reason = damage_of_kernel(files_of(res)) if cached(res) else None
            state = "not cached" if not cached(res) else f"damaged ({reason})" if reason else "cached"
            out.append((spec, res, state))
        except HarnessError as e:
            out.append((spec, None, str(e)))
    return out
