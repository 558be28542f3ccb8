"""The guest: a base initramfs (busybox, dropbear, kmod) and a payload.

The base initramfs holds no test modules, so that one booted guest, saved as a
snapshot (`harness/guest/snapshot.py`), serves every module set.  The payload (our
modules, the kernel's modules asked for by name with their deps, modules.dep
for the lot, extra files such as the racer) is one tar that the guest
unpacks over SSH once it is up, on a cold boot and a restore alike.

The guest's user space comes from Debian packages unpacked into the cache (not
from whatever the host has installed), so every host builds the same image.
Busybox is Debian's dynamic build on purpose: the static one prefers its own
`modprobe`/`rmmod` applets even over `/sbin`, and the kernel's `request_module`
must run kmod's real modprobe.

The base also holds what test programs expect of a Linux system: the
kernel's config and System.map in /boot, Debian's standard users and groups
(base-passwd's), bookworm's /etc/os-release, and each busybox applet in
/usr/bin as well as /bin.  Extra Debian packages (`--guest-packages`) come
as a layer appended to the base initramfs (`packages.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HarnessError
from ..kernels import DEFAULT_RELEASE, KernelFiles, apt
from ..paths import cache_dir, data_dir
from ..progress import progress
from ..util import (
    Stamp,
    cached,
    damage,
    file_lock,
    hash_inputs,
    need_tool,
    private_dir,
    private_file,
    read_json_object,
    run_tool,
    write_private,
)
from . import packages as guest_packages
from .cpio import Cpio
from .modtree import TREE_MODULES, _depmod, all_modules, check_kmods, module_closure, tree_disk
from .programs import RACER_PATH

IMAGES = data_dir("images")
READY_MARKER = "HARNESS-GUEST-READY"
# init prints this when the base guest is up, then waits for its start line
# (`start_line`) on the console: the point a snapshot is saved at.
WAIT_MARKER = "HARNESS-GUEST-WAITING"
START_FAILED_MARKER = "HARNESS-GUEST-START-FAILED"  # a bad start line, or the reseed failed
SEED_SOURCE = IMAGES / "seed.c"
SEED_PATH = "/bin/harness-seed"
SEED_BYTES = 64
GUEST_PACKAGES = (
    "busybox",
    "dropbear-bin",
    "kmod",
    "libc6",
    "libtomcrypt1",
    "libtommath1",
    "libgmp10",
    "zlib1g",
    "libcrypt1",
    "libzstd1",
    "liblzma5",
    "libssl3",
    "base-files",
    "base-passwd",  # only os-release, debian_version and the standard users and groups
)
GUEST_BINARIES = ("bin/busybox", "usr/sbin/dropbear", "bin/kmod")
KMOD_TOOLS = ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo")
# What the base initramfs holds besides user space; part of its digest:
# change it whenever _assemble changes what goes in.
BASE_RECIPE = (
    "applets in /bin and /usr/bin",
    "boot/config and System.map",
    "base-passwd users and groups",
    "os-release",
    "the module tree disk mounted over lib/modules/RELEASE/kernel, its modules.dep",
)
# The guest's own machinery: a guest package never replaces these paths.
HARNESS_OWNED = (
    "init",
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/shells",
    "etc/profile",
    "etc/dropbear",
    "root/.ssh",
    "lib/modules",
    "boot",
    *GUEST_BINARIES,
    *(f"sbin/{tool}" for tool in KMOD_TOOLS),
    SEED_PATH.lstrip("/"),
    RACER_PATH.lstrip("/"),
)
# Modules the guest loads at boot; their dependencies come from modules.dep.
BOOT_MODULES = ("virtio_pci", "virtio_net")


@dataclass(frozen=True)
class GuestExtra:
    """A host file to place in the guest (the racer, a test program)."""

    src: Path
    dest: str  # absolute path in the guest
    mode: int = 0o755


@dataclass(frozen=True)
class Image:
    """A built base initramfs, the payload for its guest, and what a client
    needs to log in."""

    kernel: KernelFiles
    initrd: Path
    ssh_key: Path
    host_key_pub: str  # "ecdsa-sha2-nistp256 AAAA..." pinned by the client
    modules: tuple[str, ...] = field(default=())  # names of the extra modules
    initrd_stamp: Stamp | None = None  # as written; checked again at boot
    payload: Path | None = None  # tar unpacked at / in the guest once it is up
    payload_stamp: Stamp | None = None
    packages: tuple[str, ...] = field(default=())  # name=version of the guest packages in its initramfs
    modtree: Path | None = None  # the kernel's whole module tree, a read-only disk (modtree.tree_disk)

    def damage(self) -> str | None:
        """Why the initramfs or the payload on disk is not the one built, or None."""
        why = damage(self.initrd, self.initrd_stamp)
        if why is None and self.payload is not None:
            why = damage(self.payload, self.payload_stamp)
        return why


def start_line(seed: bytes, wall_ns: int, rcu_expedited: bool, hung_task_timeout_s: int) -> str:
    """What the host types on the guest's console to let init go on: fresh
    randomness and the wall clock (a restored guest has the saved ones) and
    the run's settings (so that one snapshot serves them all)."""
    if not SEED_BYTES <= len(seed) <= 512:
        raise HarnessError(f"a guest seed is {SEED_BYTES} to 512 bytes, not {len(seed)}")
    sec, nsec = divmod(wall_ns, 1_000_000_000)
    return f"start {seed.hex()} {sec} {nsec} {int(rcu_expedited)} {int(hung_task_timeout_s)}"


# ---------------------------------------------------------------- user space


def guest_userland() -> Path:
    """Debian's busybox, dropbear and kmod with their libraries, unpacked once:
    from the default kernel's release through the harness's own catalogue, so
    every kernel and every host gets the same guest.  One folder per package
    list: a longer list is downloaded anew, not mixed into an older folder."""
    base = cache_dir() / "guest-userland" / f"{DEFAULT_RELEASE}-{hash_inputs(GUEST_PACKAGES)[:8]}"
    root = base / "root"
    marker = base / ".unpacked"
    debs = base / "debs"

    def build(root: Path) -> Path:
        progress(f"guest user space: {' '.join(GUEST_PACKAGES)} from Debian {DEFAULT_RELEASE}")
        apt.download_newest(GUEST_PACKAGES, DEFAULT_RELEASE, debs)
        for deb in sorted(debs.glob("*.deb")):
            run_tool(["dpkg", "-x", deb, root], what=f"dpkg -x {deb.name}")
        marker.write_text("\n".join(sorted(p.name for p in debs.glob("*.deb"))))
        return root

    # In place: the folder holds its lock, and the marker (written last) names the .debs.
    return cached(
        root,
        base / ".lock",
        lambda: root if marker.is_file() else None,
        build,
        leftovers=lambda: [debs, root],
        remove=lambda p: shutil.rmtree(p, ignore_errors=True),
    )


def _needed(elf: Path) -> list[str]:
    out = run_tool(["readelf", "-d", elf], what=f"readelf -d {elf.name}").stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def resolve_in(root: Path, path: Path) -> Path:
    """`path` with its symlinks followed inside `root`: an absolute target
    (libc6's lib64/ld-linux-x86-64.so.2 -> /lib/...) names a file of the
    unpacked packages, never the host's own (another glibc on a newer host)."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
    raise HarnessError(f"symlink loop at {path}")


def _find_lib(root: Path, name: str) -> Path:
    for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"):
        if resolve_in(root, root / d / name).exists():
            return root / d / name
    raise HarnessError(f"guest library {name} not found in the unpacked packages")


def library_closure(root: Path, binaries: tuple[str, ...]) -> set[Path]:
    """Every shared library (and the loader) the binaries need, recursively."""
    need_tool("readelf", "binutils")
    todo = [root / b for b in binaries]
    seen: set[Path] = set()
    while todo:
        elf = todo.pop()
        for lib in _needed(elf):
            path = _find_lib(root, lib)
            if path not in seen:
                seen.add(path)
                todo.append(resolve_in(root, path))
    seen.add(root / "lib64" / "ld-linux-x86-64.so.2")
    return seen


# ---------------------------------------------------------------- keys


def _known_public(key: Path) -> str | None:
    """The public line recorded for this exact private key, if any: deriving
    it costs paramiko's import or a dropbearkey run on every guest."""
    try:
        digest, pub = (key.parent / f"{key.name}.pub-for").read_text().split(" ", 1)
    except (OSError, ValueError):
        return None
    return pub.strip() if digest == hashlib.sha256(key.read_bytes()).hexdigest() else None


def _record_public(key: Path, pub: str) -> None:
    (key.parent / f"{key.name}.pub-for").write_text(f"{hashlib.sha256(key.read_bytes()).hexdigest()} {pub}\n")


def client_key() -> tuple[Path, str]:
    """The per-cache key pair the harness logs in with (generated on first use)."""
    d = private_dir(cache_dir() / "ssh")
    key_path = d / "id_ecdsa"
    with file_lock(d / ".lock"):
        if key_path.exists():
            private_file(key_path)
            pub = _known_public(key_path)
            if pub is not None:
                return key_path, pub
        import paramiko

        if not key_path.exists():
            key = paramiko.ECDSAKey.generate(bits=256)
            text = io.StringIO()
            key.write_private_key(text)
            write_private(key_path, text.getvalue().encode())
        private_file(key_path)
        key = paramiko.ECDSAKey.from_private_key_file(str(key_path))
        pub = f"{key.get_name()} {key.get_base64()} harness"
        _record_public(key_path, pub)
    return key_path, pub


def host_key(userland: Path) -> tuple[Path, str]:
    """Dropbear's host key, made once with the unpacked dropbearkey, and its public line."""
    d = private_dir(cache_dir() / "ssh")
    key = d / "dropbear_ecdsa_host_key"
    with file_lock(d / ".lock"):
        if not key.exists():
            _run_unpacked(userland, "usr/bin/dropbearkey", "-t", "ecdsa", "-s", "256", "-f", str(key))
        private_file(key)
        pub = _known_public(key)
        if pub is None:
            out = _run_unpacked(userland, "usr/bin/dropbearkey", "-y", "-f", str(key))
            pub = " ".join(next(line for line in out.splitlines() if line.startswith("ecdsa-")).split()[:2])
            _record_public(key, pub)
    return key, pub


def _run_unpacked(root: Path, binary: str, *args: str) -> str:
    """Run a binary from the unpacked packages with their own loader and libraries."""
    libpath = ":".join(str(root / d) for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    proc = run_tool(
        [resolve_in(root, root / "lib64/ld-linux-x86-64.so.2"), "--library-path", libpath, root / binary, *args],
        what=Path(binary).name,
    )
    return proc.stdout


# ---------------------------------------------------------------- build


def _render(name: str, **ctx: object) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined  # only when an image is built

    env = Environment(loader=FileSystemLoader(str(IMAGES)), undefined=StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name).render(**ctx)


def _guest_programs() -> dict[str, Path]:
    """Our own static guest programs, by their path in the guest: the seed
    helper, and the racer (every race needs it; in the base it costs no
    upload)."""
    from .programs import RACER_PATH as GUEST_PATH
    from .programs import build_racer, build_static

    return {SEED_PATH: build_static(SEED_SOURCE, "harness-seed"), GUEST_PATH: build_racer()}


def _check_cached(path: Path, meta_path: Path, key: str, out: Path) -> Stamp | None:
    """The recorded stamp of a cached file if it is intact, else None (said why)."""
    if not path.exists():
        return None
    stamp = Stamp.from_json(read_json_object(meta_path).get(key))
    reason = damage(path, stamp)
    if reason is None:
        private_file(path)
        return stamp
    progress(f"image: cached {reason} in {out}; rebuilding")
    return None


def base_image(kernel: KernelFiles) -> Image:
    """The plain image of a kernel: the base initramfs (user space, keys,
    init, the boot modules) and no payload."""
    userland = guest_userland()
    key_path, client_pub = client_key()
    hkey, hpub = host_key(userland)
    from .fsimages import image_files

    programs = {**_guest_programs(), **image_files()}  # and the images busybox cannot make
    templates = tuple(sorted(IMAGES.glob("*.j2")))
    modtree = tree_disk(kernel)
    digest = hash_inputs(
        "base",
        BASE_RECIPE,
        modtree is not None,
        kernel.identity,
        kernel.version,
        (userland.parent / ".unpacked").read_text(),
        client_pub,
        hpub,
        *templates,
        *[part for item in sorted(programs.items()) for part in item],
    )
    # The initramfs holds the guest's private host key: owner-only folders and files.
    out = private_dir(private_dir(cache_dir() / "images") / f"base-{digest}")
    initrd = out / "initramfs.cpio"
    meta_path = out / "image.json"

    def build_base(path: Path) -> Stamp:
        progress(f"image: building the base initramfs for {kernel.release}")
        write_private(path, _assemble(kernel, userland, client_pub, hkey, programs, modtree is not None))
        stamp = Stamp.of(path)
        meta_path.write_text(json.dumps({"kernel": kernel.release, "initrd": stamp.to_json()}))
        progress(f"image: {stamp.size // 1024} KiB")
        return stamp

    # In place: write_private makes the file atomically, the manifest is written after it.
    stamp = cached(initrd, out / ".lock", lambda: _check_cached(initrd, meta_path, "initrd", out), build_base)
    return Image(kernel, initrd, key_path, hpub, (), stamp, modtree=modtree)


def with_packages(base: Image, names: tuple[str, ...]) -> Image:
    """The base image with Debian packages (and their dependencies) in its
    initramfs: the base archive and the set's layer one after the other, a
    file of its own per base and exact set, so its guest gets a snapshot of
    its own."""
    pset = guest_packages.resolve(names)
    if not pset.packages:
        return base
    out = private_dir(base.initrd.parent / f"packages-{pset.key(HARNESS_OWNED)}")
    initrd, meta_path = out / "initramfs.cpio", out / "image.json"

    def build(path: Path) -> Stamp:
        layer = guest_packages.layer(pset, HARNESS_OWNED)  # only now: a warm run reads (and hashes) one file
        write_private(path, base.initrd.read_bytes() + layer.path.read_bytes())
        stamp = Stamp.of(path)
        meta_path.write_text(
            json.dumps({"kernel": base.kernel.release, "packages": list(pset.pins), "initrd": stamp.to_json()})
        )
        return stamp

    stamp = cached(initrd, out / ".lock", lambda: _check_cached(initrd, meta_path, "initrd", out), build)
    return dataclasses.replace(base, initrd=initrd, initrd_stamp=stamp, packages=pset.pins)


def build_image(
    kernel: KernelFiles,
    modules: tuple[Path, ...] = (),
    extras: tuple[GuestExtra, ...] = (),
    kmods: tuple[str, ...] = (),
    packages: tuple[str, ...] = (),
) -> Image:
    """Build (or reuse) the base initramfs of a kernel and the payload with
    extra modules and files, and `kmods`: the kernel's own modules by name,
    with their deps; `packages`: Debian packages in the guest (with_packages)."""
    for ko in modules:
        if not ko.is_file() or not ko.name.endswith(".ko"):
            raise HarnessError(f"module {ko} is not a .ko file")
    for extra in extras:
        if not extra.src.is_file():
            raise HarnessError(f"guest file {extra.src} does not exist")
    kmods = check_kmods(kernel, kmods)
    base = with_packages(base_image(kernel), packages)
    mod_names = tuple(ko.name[:-3].replace("-", "_") for ko in modules)
    if not (modules or extras or kmods):
        return base
    digest = hash_inputs(
        "payload",
        kernel.identity,
        kernel.version,
        *modules,
        *[(e.dest, e.mode) for e in extras],
        *[e.src for e in extras],
        kmods,
        base.modtree is not None,
    )
    out = private_dir(private_dir(cache_dir() / "images") / digest)
    tar = out / "payload.tar"
    meta_path = out / "image.json"

    def build_payload(path: Path) -> Stamp:
        progress(
            f"image: packing {len(modules)} modules and {len(extras) + len(kmods)} more files for {kernel.release}"
        )
        write_private(path, _payload(kernel, modules, extras, kmods, base.modtree is not None))
        stamp = Stamp.of(path)
        meta_path.write_text(json.dumps({"kernel": kernel.release, "modules": mod_names, "payload": stamp.to_json()}))
        return stamp

    stamp = cached(tar, out / ".lock", lambda: _check_cached(tar, meta_path, "payload", out), build_payload)
    return dataclasses.replace(base, modules=mod_names, payload=tar, payload_stamp=stamp)


class _Tar:
    """A deterministic tar in memory: root-owned, fixed times, parents first."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.USTAR_FORMAT)
        self.dirs: set[str] = set()

    def _dir(self, path: str) -> None:
        if not path or path in self.dirs:
            return
        self._dir(os.path.dirname(path))
        self.dirs.add(path)
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tar.addfile(info)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._dir(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(data), mode
        self.tar.addfile(info, io.BytesIO(data))

    def finish(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def _payload(
    kernel: KernelFiles, modules: tuple[Path, ...], extras: tuple[GuestExtra, ...], kmods: tuple[str, ...], tree: bool
) -> bytes:
    tar = _Tar()
    mdir = f"lib/modules/{kernel.release}"
    # modules.dep & co. for the in-tree modules the guest has and ours: they
    # replace the base's, so the guest needs no depmod of its own.  With the
    # tree disk the guest has every in-tree module already (read-only).
    if tree:
        in_tree = all_modules(kernel)
    else:
        in_tree = module_closure(kernel, BOOT_MODULES + kmods)
        for rel in module_closure(kernel, kmods):
            tar.file(f"{mdir}/{rel}", (kernel.modules_dir / rel).read_bytes())
    for ko in modules:
        tar.file(f"{mdir}/extra/{ko.name}", ko.read_bytes())
    for name, data in _depmod(kernel, modules, in_tree).items():
        tar.file(f"{mdir}/{name}", data)
    for extra in extras:
        tar.file(extra.dest, extra.src.read_bytes(), extra.mode)
    return tar.finish()


def passwd(master: str) -> str:
    """base-passwd's standard users with root's shell the base guest's own
    (dropbear runs commands through it, and the base has no bash)."""
    lines = master.splitlines()
    return "".join(("root:x:0:0:root:/root:/bin/sh" if line.startswith("root:") else line) + "\n" for line in lines)


def _assemble(
    kernel: KernelFiles, userland: Path, client_pub: str, hkey: Path, programs: dict[str, Path], tree: bool
) -> bytes:
    cpio = Cpio()
    for d in (
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root/.ssh",
        "etc/dropbear",
        "etc/modprobe.d",
        "var/log",
        "mnt",
        "usr/bin",
        "usr/sbin",
        "sbin",
    ):
        cpio.dir(d)
    for binary in GUEST_BINARIES:
        cpio.file(binary, (userland / binary).read_bytes(), 0o755)
    for lib in sorted(library_closure(userland, GUEST_BINARIES)):
        rel = str(lib.relative_to(userland))
        cpio.file(rel, resolve_in(userland, lib).read_bytes(), 0o755)
    applets = _run_unpacked(userland, "bin/busybox", "--list").split()
    for applet in applets:
        if applet in KMOD_TOOLS or applet == "busybox":
            continue
        cpio.symlink(f"bin/{applet}", "busybox")
        # Scripts name /usr/bin/env and the like: a merged /usr has each in both.
        cpio.symlink(f"usr/bin/{applet}", f"/bin/{applet}")
    for tool in KMOD_TOOLS:
        cpio.symlink(f"sbin/{tool}", "/bin/kmod")
    for dest, program in sorted(programs.items()):
        cpio.file(dest, program.read_bytes(), 0o755)
    cpio.file("etc/dropbear/dropbear_ecdsa_host_key", hkey.read_bytes(), 0o600)
    cpio.file("root/.ssh/authorized_keys", (client_pub + "\n").encode(), 0o600)
    cpio.file("etc/passwd", passwd((userland / "usr/share/base-passwd/passwd.master").read_text()).encode())
    cpio.file("etc/group", (userland / "usr/share/base-passwd/group.master").read_bytes())
    cpio.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)
    cpio.file("usr/lib/os-release", (userland / "usr/lib/os-release").read_bytes())
    cpio.symlink("etc/os-release", "../usr/lib/os-release")
    cpio.file("etc/debian_version", (userland / "etc/debian_version").read_bytes())
    # The kernel's own, where tests look for how it was built (Debian's packages
    # ship a stub System.map, a kernel built here the real one: about 5 MB).
    for name in (f"config-{kernel.release}", f"System.map-{kernel.release}"):
        if (kernel.root / "boot" / name).is_file():
            cpio.file(f"boot/{name}", (kernel.root / "boot" / name).read_bytes())
    cpio.file("etc/shells", b"/bin/sh\n")
    cpio.file("etc/profile", b"export PATH=/sbin:/usr/sbin:/bin:/usr/bin\n")
    # The boot modules (virtio, and what mounts the tree disk); the rest is on
    # the tree disk, whose modules.dep is this one, or comes with a payload.
    mdir = f"lib/modules/{kernel.release}"
    boot = module_closure(kernel, BOOT_MODULES + (TREE_MODULES if tree else ()))
    for rel in boot:
        cpio.file(f"{mdir}/{rel}", (kernel.modules_dir / rel).read_bytes())
    for name, data in _depmod(kernel, (), all_modules(kernel) if tree else boot).items():
        cpio.file(f"{mdir}/{name}", data)
    init = _render(
        "init.sh.j2",
        ready_marker=READY_MARKER,
        wait_marker=WAIT_MARKER,
        fail_marker=START_FAILED_MARKER,
        boot_modules=BOOT_MODULES,
        tree_modules=TREE_MODULES if tree else (),
        release=kernel.release,
        seed=SEED_PATH,
    )
    cpio.file("init", init.encode(), 0o755)
    return cpio.finish()
