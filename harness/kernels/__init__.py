"""Real Debian kernels, fetched as packages and unpacked into the cache, and
kernels built elsewhere (`--kernel PATH`), laid out the same way.

Nothing is installed into the system: the harness's own catalogue
(catalogue.py) resolves a spec to exact packages and downloads them, and
`dpkg -x` unpacks them into a private folder per ABI, so several kernels live
side by side whatever the host's distribution.  A local tree (localtree.py)
gets a folder per content hash, linking into the tree.
"""

from __future__ import annotations

import functools
import json
import lzma
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import catalogue, debugkernel, localtree
from ..errors import HarnessError
from ..paths import cache_dir
from ..progress import progress
from ..util import cached as cached_artifact
from ..util import damage_of, last_line, need_tool, read_json_object, run_tool, stamps_of


# A kernel spec is a row of the harness's own catalogue (suite, flavour, series).
KernelSpec = catalogue.KernelRow
SPECS: dict[str, KernelSpec] = catalogue.ROWS
DEFAULT_KERNEL = catalogue.DEFAULT_KERNEL


Resolved = catalogue.ResolvedKernel  # the exact packages a spec stands for today


@dataclass(frozen=True)
class KernelFiles:
    """An unpacked kernel with its catalogue row: the one object the module
    build, the image and the VM take; nothing looks its row up again by name."""

    row: KernelSpec
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


VALID = f"valid: {', '.join(SPECS)}, all, or the PATH of a kernel build tree or installed root"


def parse_specs(text: str) -> list[KernelSpec]:
    """`6.1,6.12`, `all` or `6.1,/src/linux` -> specs; a path is a local tree,
    found and checked now (before anything boots).  Unknown names are a
    clear error."""
    names = list(catalogue.PACKAGED) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    if not any(names):
        raise HarnessError(f"no kernel given; {VALID}")
    if not all(names):
        raise HarnessError(f"empty kernel name in {text!r} (stray comma?); {VALID}")
    for n in names:
        if n not in SPECS and not localtree.looks_like_path(n):
            raise HarnessError(f"unknown kernel spec {n!r}; {VALID}")
    return [SPECS[n] if n in SPECS else catalogue.local_row(n) for n in names]


def get_spec(name: str) -> KernelSpec:
    specs = parse_specs(name)
    if len(specs) != 1:
        raise HarnessError(f"one kernel expected here, got {name!r}")
    return specs[0]


def resolve(spec: KernelSpec, refresh: bool = False) -> Resolved:
    """A spec's exact packages in the catalogue's lists (never the host's)."""
    return catalogue.resolve(spec, refresh=refresh)


def root_of(res: Resolved) -> Path:
    """The kernel's folder in the cache (one per ABI)."""
    return cache_dir() / "kernels" / res.abi


def _marker(res: Resolved) -> Path:
    return root_of(res) / ".unpacked.json"


def cached(res: Resolved) -> bool:
    return _marker(res).is_file()


def files_of(res: Resolved) -> KernelFiles:
    origin = f"built here from {res.row.source} {res.version}" if res.row.source else f"Debian {res.version}"
    return KernelFiles(res.row, res.abi, res.version, root_of(res) / "root", origin)


def _checked_files(release: str) -> tuple[str, ...]:
    """What booting and building an image read from the unpacked kernel (paths
    under its root); their stamps are kept in the marker."""
    mods = f"lib/modules/{release}"
    return (f"boot/vmlinux-{release}", f"boot/vmlinuz-{release}", f"boot/config-{release}",
            f"{mods}/modules.dep", f"{mods}/modules.order", f"{mods}/modules.builtin",
            f"{mods}/modules.builtin.modinfo")


def damage_of_kernel(files: KernelFiles) -> str | None:
    """Why an unpacked kernel cannot be trusted (missing marker, a file whose
    size or hash changed), or None.  Cheap after the first call in a process."""
    marker = files.root.parent / ".unpacked.json"
    if not marker.is_file():
        return "it is not unpacked"
    recorded = read_json_object(marker).get("files")
    # What the marker recorded (a local tree has only the images it has),
    # and always the image that boots.
    rels = list(recorded) if isinstance(recorded, dict) and recorded else list(_checked_files(files.release))
    boot = str(files.boot_image.relative_to(files.root))
    return damage_of(files.root, recorded, rels + [boot] * (boot not in rels))


def _write_marker(res: Resolved) -> None:
    data = {"abi": res.abi, "version": res.version, "packages": list(res.pins),
            "files": stamps_of(root_of(res) / "root", _checked_files(res.abi))}
    tmp = _marker(res).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(_marker(res))


def _repair(res: Resolved, files: KernelFiles) -> bool:
    """Fix a damaged unpacked kernel in place if only its vmlinux is bad
    (it is made from vmlinuz here); False if it needs unpacking again."""
    recorded = read_json_object(_marker(res)).get("files")
    if not isinstance(recorded, dict):
        # An older harness recorded nothing: trust the package files, remake vmlinux.
        if not files.vmlinuz.is_file():
            return False
        extract_vmlinux(files.vmlinuz, files.vmlinux)
        _write_marker(res)
        return True
    vmlinux = f"boot/vmlinux-{res.abi}"
    others = [rel for rel in _checked_files(res.abi) if rel != vmlinux]
    if damage_of(files.root, recorded, others) is not None:
        return False
    extract_vmlinux(files.vmlinuz, files.vmlinux)
    _write_marker(res)
    return True


def fetch(spec: KernelSpec, quiet: bool = False) -> KernelFiles:
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
            _marker(res).unlink()
        if cached(res):
            reason = damage_of_kernel(files)
            if reason is None:
                if not quiet:
                    progress(f"kernel {spec.name}: {res.abi} ({res.version}) already cached")
                return files
            progress(f"kernel {spec.name}: cached {res.abi} cannot be used: {reason}; repairing")
            if spec.source is None and _repair(res, files):
                progress(f"kernel {spec.name}: {res.abi} repaired (vmlinux extracted again)")
                return files
            _marker(res).unlink()
        return None

    # In place: the folder is per ABI and holds its lock; the marker
    # (.unpacked.json, written last) is what publishes the unpacked kernel.
    return cached_artifact(root_of(res) / "root", root_of(res) / ".lock", reuse, lambda root: _unpack(spec, res))


def _build(spec: KernelSpec, res: Resolved) -> KernelFiles:
    """A kernel built here from Debian's source (debugkernel.py)."""
    need_tool("depmod", "kmod")
    debugkernel.build(spec, res, root_of(res) / "root")
    files = files_of(res)
    run_tool(["depmod", "-b", files.root, res.abi], what="depmod")
    _write_marker(res)
    progress(f"kernel {spec.name}: {res.abi} ready")
    return files


def _unpack(spec: KernelSpec, res: Resolved) -> KernelFiles:
    if spec.source is not None:
        return _build(spec, res)
    need_tool("dpkg", "dpkg")
    need_tool("depmod", "kmod")
    got, debs = catalogue.fetch(spec)
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
    _write_marker(res)
    progress(f"kernel {spec.name}: {res.abi} ready")
    return files


def _fetch_local(spec: KernelSpec, tree: localtree.LocalTree, quiet: bool) -> KernelFiles:
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
            progress(f"kernel {spec.name}: booting {tree.boot_image.relative_to(tree.path)}, not the ELF through "
                     "its PVH entry, which boots faster under TCG (needs CONFIG_PVH=y, and no KASAN)")
        localtree.lay_out(tree, tmp / "root")
        rels = [rel for rel in _checked_files(tree.release) if (tmp / "root" / rel).exists()]
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


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Decompress the ELF payload of a bzImage (xz on 6.1, zstd on 6.12)."""
    data = vmlinuz.read_bytes()
    payload = b""
    xz_at = data.find(b"\xfd7zXZ\x00")
    zstd_at = data.find(b"\x28\xb5\x2f\xfd")
    if xz_at >= 0:
        payload = lzma.LZMADecompressor().decompress(data[xz_at:])
    elif zstd_at >= 0:
        need_tool("zstd", "zstd")
        # zstd exits non-zero on the bzImage's trailer after the frame, after
        # writing the whole payload: the ELF check below is the real test.
        proc = run_tool(["zstd", "-dcq"], input=data[zstd_at:], text=False, check=False)
        payload = proc.stdout
        if not payload.startswith(b"\x7fELF"):
            raise HarnessError(f"could not extract an ELF kernel from {vmlinuz}: "
                               f"zstd: {last_line(proc.stderr) or f'exit status {proc.returncode}'}")
    if not payload.startswith(b"\x7fELF"):
        raise HarnessError(f"could not extract an ELF kernel from {vmlinuz}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, out)


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
            link.symlink_to(Path(*([".."] * (len(link.relative_to(files.root).parts) - 1))) / target.relative_to(files.root))


def status(refresh: bool = False) -> list[tuple[KernelSpec, Resolved | None, str]]:
    """Every spec with its resolution (or the reason it failed) for `kernels`."""
    cache_dir()  # an unusable cache folder is one error, not one per row
    if refresh:
        catalogue.update(refresh=True)
    out: list[tuple[KernelSpec, Resolved | None, str]] = []
    for spec in SPECS.values():
        try:
            res = resolve(spec)
            reason = damage_of_kernel(files_of(res)) if cached(res) else None
            state = "not cached" if not cached(res) else f"damaged ({reason})" if reason else "cached"
            out.append((spec, res, state))
        except HarnessError as e:
            out.append((spec, None, str(e)))
    return out
