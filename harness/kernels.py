"""Real Debian kernels, fetched as packages and unpacked into the cache.

Nothing is installed into the system: `apt-get download` + `dpkg -x` into a
private folder per ABI, so several kernels live side by side.  The exact ABI is
resolved through the meta-packages so that image and headers always match.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import HarnessError
from .paths import cache_dir
from .progress import progress
from .util import damage_of, file_lock, last_line, need_tool, run_tool, stamps_of


@dataclass(frozen=True)
class KernelSpec:
    """A user-facing kernel name and the meta-packages behind it."""

    name: str
    series: str  # "6.1", "6.12": the resolved version must start with it
    image_meta: str
    headers_meta: str


SPECS: dict[str, KernelSpec] = {
    s.name: s
    for s in (
        KernelSpec("6.1", "6.1", "linux-image-amd64", "linux-headers-amd64"),
        KernelSpec("6.1-rt", "6.1", "linux-image-rt-amd64", "linux-headers-rt-amd64"),
        KernelSpec("6.12", "6.12", "linux-image-6.12-amd64", "linux-headers-6.12-amd64"),
        KernelSpec("6.12-rt", "6.12", "linux-image-6.12-rt-amd64", "linux-headers-6.12-rt-amd64"),
    )
}
DEFAULT_KERNEL = "6.1"


@dataclass(frozen=True)
class Resolved:
    """The exact packages a spec stands for today."""

    spec: KernelSpec
    abi: str  # "6.1.0-56-amd64": the kernel release (uname -r)
    version: str  # Debian version of the image package, "6.1.192-2"
    packages: tuple[str, ...]  # "name=version" for apt-get download

    @property
    def root(self) -> Path:
        return cache_dir() / "kernels" / self.abi


@dataclass(frozen=True)
class KernelFiles:
    """An unpacked kernel: what the image and the module build need."""

    name: str
    release: str
    version: str
    root: Path

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

    @property
    def config(self) -> dict[str, str]:
        conf = {}
        for line in (self.root / "boot" / f"config-{self.release}").read_text().splitlines():
            if line.startswith("CONFIG_"):
                key, _, val = line.partition("=")
                conf[key] = val
        return conf


def parse_specs(text: str) -> list[KernelSpec]:
    """`6.1,6.12` or `all` -> specs; unknown names are a clear error."""
    names = list(SPECS) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    if not any(names):
        raise HarnessError(f"no kernel given; valid: {', '.join(SPECS)}, all")
    if not all(names):
        raise HarnessError(f"empty kernel name in {text!r} (stray comma?); valid: {', '.join(SPECS)}, all")
    for n in names:
        if n not in SPECS:
            raise HarnessError(f"unknown kernel spec {n!r}; valid: {', '.join(SPECS)}, all")
    return [SPECS[n] for n in names]


def get_spec(name: str) -> KernelSpec:
    specs = parse_specs(name)
    if len(specs) != 1:
        raise HarnessError(f"one kernel expected here, got {name!r}")
    return specs[0]


def _apt_show(package: str) -> dict[str, str]:
    """Fields of the candidate version of a package, from the apt lists."""
    need_tool("apt-cache", "apt")
    try:
        proc = run_tool(["apt-cache", "show", "--no-all-versions", package])
    except HarnessError:
        proc = None
    if proc is None or not proc.stdout.strip():
        raise HarnessError(
            f"apt does not know {package}; run 'apt-get update' (as root) and check that "
            "Debian bookworm, bookworm-updates and bookworm-security are in the sources"
        )
    return parse_control(proc.stdout)


def parse_control(text: str) -> dict[str, str]:
    """Parse one Debian control stanza (continuation lines folded)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        else:
            key, _, val = line.partition(":")
            fields[key] = val.strip()
    return fields


def depends_on(fields: dict[str, str], pattern: str) -> tuple[str, str | None]:
    """The first dependency whose name matches `pattern`: (name, pinned version)."""
    for alt in fields.get("Depends", "").split(","):
        dep = alt.split("|")[0].strip()
        m = re.match(r"([a-z0-9.+-]+)\s*(?:\((=|>=)\s*([^)]+)\))?", dep)
        if m and re.fullmatch(pattern, m.group(1)):
            return m.group(1), (m.group(3) if m.group(2) == "=" else None)
    raise HarnessError(f"{fields.get('Package')} has no dependency matching {pattern}")


def _apt_lists_stamp() -> str:
    lists = Path("/var/lib/apt/lists")
    stamps = [p.stat().st_mtime_ns for p in lists.glob("*_Packages*")] if lists.is_dir() else []
    return str(max(stamps, default=0))


def resolve(spec: KernelSpec) -> Resolved:
    """Meta-packages -> exact packages, remembered until the apt lists change
    (asking apt-cache costs about half a second per package)."""
    memo = cache_dir() / "resolved.json"
    stamp = _apt_lists_stamp()
    with file_lock(cache_dir() / "resolved.lock"):
        known = json.loads(memo.read_text()) if memo.is_file() else {}
        if known.get("stamp") != stamp:
            known = {"stamp": stamp}
        if spec.name not in known:
            res = _resolve(spec)
            known[spec.name] = [res.abi, res.version, list(res.packages)]
            memo.write_text(json.dumps(known, indent=1))
    abi, version, packages = known[spec.name]
    return Resolved(spec, abi, version, tuple(packages))


def _resolve(spec: KernelSpec) -> Resolved:
    """Meta-packages -> exact image/headers/common/kbuild packages of one ABI."""
    image_meta = _apt_show(spec.image_meta)
    headers_meta = _apt_show(spec.headers_meta)
    image_pkg, image_ver = depends_on(image_meta, r"linux-image-.*")
    headers_pkg, headers_ver = depends_on(headers_meta, r"linux-headers-.*")
    abi = image_pkg.removeprefix("linux-image-").removesuffix("-unsigned")
    headers_abi = headers_pkg.removeprefix("linux-headers-")
    if abi != headers_abi or image_ver != headers_ver:
        raise HarnessError(
            f"kernel {spec.name}: image {image_pkg} {image_ver} and headers "
            f"{headers_pkg} {headers_ver} differ; refusing a mismatched pair (apt lists mid-update?)"
        )
    if not abi.startswith(spec.series + ".") and not abi.startswith(spec.series + "-"):
        raise HarnessError(f"kernel {spec.name}: {spec.image_meta} now points at {abi}, not {spec.series}")
    headers = _apt_show(f"{headers_pkg}={headers_ver}" if headers_ver else headers_pkg)
    common, common_ver = depends_on(headers, r"linux-headers-.*-common(-rt)?")
    kbuild, _ = depends_on(headers, r"linux-kbuild-.*")
    packages = (
        f"{image_pkg}={image_ver}",
        f"{headers_pkg}={headers_ver}",
        f"{common}={common_ver}" if common_ver else common,
        kbuild,
    )
    return Resolved(spec, abi, image_ver or "", packages)


def _marker(res: Resolved) -> Path:
    return res.root / ".unpacked.json"


def cached(res: Resolved) -> bool:
    return _marker(res).is_file()


def files_of(res: Resolved) -> KernelFiles:
    return KernelFiles(res.spec.name, res.abi, res.version, res.root / "root")


def _checked_files(release: str) -> tuple[str, ...]:
    """What booting and building an image read from the unpacked kernel (paths
    under its root); their stamps are kept in the marker."""
    mods = f"lib/modules/{release}"
    return (f"boot/vmlinux-{release}", f"boot/vmlinuz-{release}", f"boot/config-{release}",
            f"{mods}/modules.dep", f"{mods}/modules.order", f"{mods}/modules.builtin",
            f"{mods}/modules.builtin.modinfo")


def _read_marker(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def damage_of_kernel(files: KernelFiles) -> str | None:
    """Why an unpacked kernel cannot be trusted (missing marker, a file whose
    size or hash changed), or None.  Cheap after the first call in a process."""
    marker = files.root.parent / ".unpacked.json"
    if not marker.is_file():
        return "it is not unpacked"
    return damage_of(files.root, _read_marker(marker).get("files"), _checked_files(files.release))


def _write_marker(res: Resolved) -> None:
    data = {"abi": res.abi, "version": res.version, "packages": res.packages,
            "files": stamps_of(res.root / "root", _checked_files(res.abi))}
    tmp = _marker(res).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(_marker(res))


def _repair(res: Resolved, files: KernelFiles) -> bool:
    """Fix a damaged unpacked kernel in place if only its vmlinux is bad
    (it is made from vmlinuz here); False if it needs unpacking again."""
    recorded = _read_marker(_marker(res)).get("files")
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
    """Download and unpack a kernel once; later calls check and return the cached copy."""
    res = resolve(spec)
    res.root.mkdir(parents=True, exist_ok=True)
    with file_lock(res.root / ".lock"):
        files = files_of(res)
        if cached(res):
            reason = damage_of_kernel(files)
            if reason is None:
                if not quiet:
                    progress(f"kernel {spec.name}: {res.abi} ({res.version}) already cached")
                return files
            progress(f"kernel {spec.name}: cached {res.abi} cannot be used: {reason}; repairing")
            if _repair(res, files):
                progress(f"kernel {spec.name}: {res.abi} repaired (vmlinux extracted again)")
                return files
            _marker(res).unlink()
        return _unpack(spec, res)


def _unpack(spec: KernelSpec, res: Resolved) -> KernelFiles:
    need_tool("apt-get", "apt")
    need_tool("dpkg", "dpkg")
    need_tool("depmod", "kmod")
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    progress(f"kernel {spec.name}: downloading {' '.join(res.packages)}")
    run_tool(["apt-get", "download", "-q", *res.packages], cwd=debs,
             what="apt-get download", fix="apt-get update")
    root = res.root / "root"
    shutil.rmtree(root, ignore_errors=True)
    for pkg in res.packages:
        name, _, ver = pkg.partition("=")
        matches = sorted(debs.glob(f"{name}_*.deb"))
        if ver:
            epochless = ver.split(":")[-1]
            matches = [m for m in matches if m.name.startswith(f"{name}_{epochless}_")]
        if not matches:
            raise HarnessError(f"downloaded package {pkg} not found in {debs}")
        progress(f"kernel {spec.name}: unpacking {matches[-1].name}")
        run_tool(["dpkg", "-x", matches[-1], root], what=f"dpkg -x {matches[-1].name}",
                 fix=f"delete {matches[-1]} and fetch again")
    files = files_of(res)
    _fix_headers(files)
    # The package has no modules.dep (depmod runs at install time): make it.
    run_tool(["depmod", "-b", root, res.abi], what="depmod")
    extract_vmlinux(files.vmlinuz, files.vmlinux)
    _write_marker(res)
    progress(f"kernel {spec.name}: {res.abi} ready")
    return files


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


def status() -> list[tuple[KernelSpec, Resolved | None, str]]:
    """Every spec with its resolution (or the reason it failed) for `kernels`."""
    cache_dir()  # an unusable cache folder is one error, not one per row
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
