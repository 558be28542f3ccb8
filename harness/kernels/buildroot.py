"""Per-suite build roots: each Debian release's modules built with its own compiler.

A kernel's headers want the compiler it was built with (bullseye gcc-10,
bookworm gcc-12, trixie gcc-14, sid gcc-16) and its kbuild tools are linked
against that release's libc, so a module set is built inside a minimal root of
the kernel's release made with mmdebstrap under ``cache_dir()/buildroots``.
One root per release holds the headers of several kernels side by side.
Experimental's kernels build in sid's root.

Every step that enters a root runs in a private mount namespace
(``unshare --mount``): /proc (objtool reads it) and the module source are
mounted there and vanish with the process, never on the host.  Making a root
and entering it needs root; without it the error says what to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ..errors import HarnessError
from ..paths import cache_dir
from ..progress import progress
from ..util import cached, last_line, need_tool, run_tool, tool_out_of_space
from . import apt
from .table import KernelRow

# Where the module source is bind-mounted inside a root.
SRC_MOUNT = "/harness/src"
# Inside a root: its own marker and one marker per installed kernel's headers.
MARKER = ".harness/root.json"
HEADERS_MARKERS = ".harness/headers"
ROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# What kbuild needs for an external module build, per release: the compiler
# the headers name (their Depends and CONFIG_CC_VERSION_TEXT), make, and the
# libraries linux-kbuild links against; from trixie on kbuild depends on
# pahole, and 7.x compares its version with the kernel's.
PACKAGES: Mapping[str, tuple[str, ...]] = {
    "bullseye": ("gcc-10", "make", "libelf1", "libssl1.1"),
    "bookworm": ("gcc-12", "make", "libelf1", "libssl3"),
    "trixie": ("gcc-14", "make", "libelf1t64", "libssl3t64", "zlib1g", "pahole"),
    "sid": ("gcc-16", "make", "libelf1t64", "libssl3t64", "zlib1g", "pahole"),
}
# A kernel built here from source (debugkernel.py) needs more than a module
# build: its root is the release's root plus these (its own identity).  "gcc"
# is the release's default compiler (trixie: gcc-14, what Debian builds 6.12
# with) under the name the kernel's Makefile calls.
KERNEL_BUILD_PACKAGES = ("gcc", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "kmod", "cpio", "xz-utils")
# Packages a root takes from the kernel's .debs (the rest of their Depends,
# like the image package or linux-base, is not needed to build modules).
HEADER_ROLES = (apt.Role.HEADERS_COMMON, apt.Role.KBUILD, apt.Role.HEADERS)


def root_suite(suite: str) -> str:
    """The release whose root builds a suite's kernels: experimental's is sid."""
    base = apt.RELEASE_FALLBACK.get(suite, suite)
    if base not in PACKAGES:
        raise HarnessError(f"no build root for Debian {suite!r}; known: {', '.join(PACKAGES)}, experimental")
    return base


@dataclass(frozen=True)
class RootSpec:
    """What a root is made from; its identity names its folder and enters the
    cache key of every module set built in it."""

    suite: str
    packages: tuple[str, ...]
    mirror: str
    keyring: Path = apt.KEYRING

    @property
    def stale_ok(self) -> bool:
        return any(s.stale_ok for s in apt.SUITES if s.name == self.suite)

    @property
    def identity(self) -> str:
        text = json.dumps(
            {"suite": self.suite, "packages": list(self.packages), "mirror": self.mirror, "keyring": str(self.keyring)},
            sort_keys=True,
        )
        return f"{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def path(self, base: Path | None = None) -> Path:
        return (base or cache_dir() / "buildroots") / self.identity

    def marker_json(self) -> str:
        return json.dumps(
            {"identity": self.identity, "suite": self.suite, "packages": list(self.packages), "mirror": self.mirror}
        )


def spec_for(suite: str, mirrors: apt.Mirrors | None = None) -> RootSpec:
    """The root a suite's kernels build in (reads the host's apt sources for the archive)."""
    base = root_suite(suite)
    mirrors = mirrors or apt.host_mirrors()
    return RootSpec(base, PACKAGES[base], mirrors.main)


def spec_for_row(row: KernelRow, mirrors: apt.Mirrors | None = None) -> RootSpec:
    """The root a row's modules build in: a kernel built from source builds
    in (and is built in) its release's root with the kernel build packages."""
    spec = spec_for(row.release, mirrors)
    if row.source is None:
        return spec
    return RootSpec(spec.suite, spec.packages + KERNEL_BUILD_PACKAGES, spec.mirror, spec.keyring)


# ---------------------------------------------------------------- command lines


def mmdebstrap_argv(spec: RootSpec, target: Path, mmdebstrap: str = "mmdebstrap") -> list[str]:
    """Made in a private mount namespace: mmdebstrap mounts /proc, /sys and /dev
    in the target, and a killed run must not leave them on the host."""
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--",
        mmdebstrap,
        "--mode=root",
        "--variant=apt",
        "--format=directory",
        f"--include={','.join(spec.packages)}",
    ]
    if spec.stale_ok:
        # The archive serves sid's Release past its Valid-Until; signatures are still checked.
        argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
    argv += [spec.suite, str(target), f"deb [signed-by={spec.keyring}] {spec.mirror} {spec.suite} main"]
    return argv


# Mounts /proc and the source folder in the root, then chroots: "$1" root, "$2" source.
_ENTER = (
    'set -e; mount -t proc proc "$1/proc"; '
    'if [ -n "$2" ]; then mount --bind "$2" "$1' + SRC_MOUNT + '"; fi; '
    'r="$1"; shift 2; exec chroot "$r" "$@"'
)


@dataclass(frozen=True)
class Overlay:
    """A folder of the root seen through an upper layer of its own (a derived
    kernel's changes to its base's trees, derive.py), in one namespace only."""

    target: str  # absolute path inside the root: the lower layer and the mount point
    upper: Path
    work: Path

    def mount(self) -> str:
        t = '"$1"' + shlex.quote(self.target)
        opts = shlex.quote(f"upperdir={self.upper},workdir={self.work}")
        return f"mount -t overlay overlay -o lowerdir={t},{opts} {t}; "


def in_root_argv(
    root: Path, argv: Sequence[str], src: Path | None = None, overlays: Sequence[Overlay] = ()
) -> list[str]:
    """Run argv chrooted in `root` in a private mount namespace with /proc,
    (if given) `src` at SRC_MOUNT and `overlays` mounted, with a clean C-locale
    environment."""
    enter = _ENTER.replace("set -e; ", "set -e; " + "".join(o.mount() for o in overlays), 1)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--",
        "sh",
        "-c",
        enter,
        "sh",
        str(root),
        str(src) if src is not None else "",
        "/usr/bin/env",
        "-i",
        f"PATH={ROOT_PATH}",
        "LC_ALL=C",
        "HOME=/root",
        *argv,
    ]


def make_argv(abi: str, jobs: int, extra: Sequence[str] = ()) -> list[str]:
    return ["make", f"-j{jobs}", "-C", f"/usr/src/linux-headers-{abi}", f"M={SRC_MOUNT}", *extra, "modules"]


# ---------------------------------------------------------------- markers


def root_ready(path: Path, spec: RootSpec) -> bool:
    """A root is used only once its marker (written last) names this spec."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("identity") == spec.identity


def headers_ready(path: Path, abi: str, stamp: Mapping[str, str]) -> bool:
    try:
        data = json.loads((path / HEADERS_MARKERS / f"{abi}.json").read_text())
    except (OSError, ValueError):
        return False
    return data == dict(stamp) and (path / "usr/src" / f"linux-headers-{abi}" / "Makefile").is_file()


def leftovers(base: Path, spec: RootSpec) -> list[Path]:
    """Folders of this spec to clear before making it: temp folders of
    interrupted runs, and the root itself if its marker is missing."""
    out = sorted(base.glob(f".{spec.identity}.tmp.*"))
    final = spec.path(base)
    if final.exists() and not root_ready(final, spec):
        out.append(final)
    return out


def _mounts_under(path: Path) -> list[str]:
    real = os.path.realpath(path)
    out: list[str] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        point = line.split()[4].encode().decode("unicode_escape")
        if point == real or point.startswith(real + "/"):
            out.append(point)
    return out


def _remove(path: Path) -> None:
    mounted = _mounts_under(path)
    if mounted:
        # Deleting through a bind mount of /dev would delete the host's nodes.
        raise HarnessError(f"{path} has mounts ({mounted[0]}); unmount them (umount -R {path}) and retry")
    shutil.rmtree(path)


# ---------------------------------------------------------------- privileges


_UNSHARE_OK: bool | None = None


def require_privileges() -> None:
    """Roots are made and entered as root, in a private mount namespace."""
    global _UNSHARE_OK
    if os.geteuid() != 0:
        raise HarnessError(
            "module builds run in per-suite build roots (mmdebstrap, chroot, mount), which need "
            "root: run the harness as root, e.g. sudo -E .venv/bin/python -m harness ..."
        )
    need_tool("unshare", "util-linux")
    need_tool("chroot", "coreutils")
    if _UNSHARE_OK is None:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--fork", "--", "true"], capture_output=True, text=True
        )
        _UNSHARE_OK = proc.returncode == 0
        if not _UNSHARE_OK:
            raise HarnessError(
                f"unshare --mount failed here ({last_line(proc.stderr)}); build roots need a "
                "private mount namespace: run the harness as root outside a restricted container"
            )
    elif not _UNSHARE_OK:
        raise HarnessError("unshare --mount does not work here; build roots need a private mount namespace")


# ---------------------------------------------------------------- making a root


def _base() -> Path:
    return cache_dir() / "buildroots"


def ensure_root(spec: RootSpec, base: Path | None = None) -> Path:
    """The root of `spec`, made now if missing or half made."""
    base = base or _base()
    path = spec.path(base)
    if root_ready(path, spec):
        return path
    require_privileges()
    mmdebstrap = need_tool("mmdebstrap", "mmdebstrap")
    if not spec.keyring.is_file():
        raise HarnessError(
            f"Debian's archive keyring {spec.keyring} is missing; install it with: "
            "apt-get install debian-archive-keyring"
        )
    base.mkdir(parents=True, exist_ok=True)

    def half_made() -> Iterator[Path]:
        for old in leftovers(base, spec):
            progress(f"build root {spec.suite}: removing half-made {old.name}")
            yield old

    def build(tmp: Path) -> Path:
        progress(f"build root {spec.suite}: making {spec.identity} with {' '.join(spec.packages)}")
        t0 = time.monotonic()
        _run_relayed(mmdebstrap_argv(spec, tmp, mmdebstrap), f"build root {spec.suite}", tmp)
        (tmp / SRC_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (tmp / HEADERS_MARKERS).mkdir(parents=True, exist_ok=True)
        (tmp / MARKER).write_text(spec.marker_json())
        progress(f"build root {spec.suite}: made in {time.monotonic() - t0:.1f} s")
        return path

    return cached(
        path,
        base / f"{spec.identity}.lock",
        lambda: path if root_ready(path, spec) else None,
        build,
        tmp=base / f".{spec.identity}.tmp.{os.getpid()}",
        leftovers=half_made,
        remove=_remove,
        # A failed root may hold mounts; the next run clears it, saying so.
        clean_failed=False,
    )


def _run_relayed(argv: list[str], label: str, tmp: Path) -> None:
    """Run mmdebstrap, passing its step lines ("I: ...") on as progress."""
    tail: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ, LC_ALL="C")
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith("I: ") and not line.startswith("I: running"):
                progress(f"{label}: {line[3:]}")
    if proc.returncode != 0:
        errors = [ln for ln in tail if ln.startswith("E: ")]
        detail = errors[0] if errors else (tail[-1] if tail else f"exit status {proc.returncode}")
        if tmp.exists() and not _mounts_under(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        full = tool_out_of_space(
            f"mmdebstrap making the {label}",
            subprocess.CompletedProcess(argv, proc.returncode, "", "\n".join(tail)),
            tmp.parent,
        )
        if full is not None:
            raise full
        raise HarnessError(
            f"mmdebstrap failed making the {label}: {detail} (check that the Debian archive "
            "is reachable; the harness retries from scratch next time)"
        )


# ---------------------------------------------------------------- kernel headers


def header_debs(debs: Mapping[apt.Role, Sequence[Path]]) -> list[Path]:
    """The .debs a root needs of a kernel, in unpack order."""
    out: list[Path] = []
    for role in HEADER_ROLES:
        if not debs.get(role):
            raise HarnessError(f"no {role.value} package among the kernel's downloads; try: harness kernels --refresh")
        out += debs[role]
    return out


def install_headers(
    spec: RootSpec, abi: str, debs: Sequence[Path], stamp: Mapping[str, str], base: Path | None = None
) -> Path:
    """Unpack a kernel's headers, headers-common and kbuild into the root.

    The root's own dpkg unpacks them (it keeps /usr-merge symlinks and replaces
    an older linux-kbuild of the same series); their other Depends (image,
    linux-base) are not needed for building, so dependencies are not checked
    and nothing is configured.  `stamp` ({deb name: sha256}) is kept in the
    headers' marker: other .debs for the same ABI are installed anew."""
    path = ensure_root(spec, base)
    if headers_ready(path, abi, stamp):
        return path
    require_privileges()

    def unpack(root: Path) -> Path:
        t0 = time.monotonic()
        inbox = root / "var/cache/harness-debs"
        shutil.rmtree(inbox, ignore_errors=True)
        inbox.mkdir(parents=True)
        for deb in debs:
            try:
                os.link(deb, inbox / deb.name)
            except OSError:
                shutil.copy2(deb, inbox / deb.name)
        (root / HEADERS_MARKERS / f"{abi}.json").unlink(missing_ok=True)
        # No fsync per file (32 s -> 5 s for one kernel): an interrupted
        # unpack leaves no marker and is redone.
        argv = [
            "dpkg",
            "--unpack",
            "--force-depends",
            "--force-unsafe-io",
            *[f"/var/cache/harness-debs/{d.name}" for d in debs],
        ]
        proc = run_tool(in_root_argv(root, argv), check=False)
        shutil.rmtree(inbox, ignore_errors=True)
        if proc.returncode != 0:
            detail = last_line(proc.stderr) or last_line(proc.stdout)
            raise HarnessError(f"installing the {abi} headers in the {spec.suite} build root failed: {detail}")
        if not (root / "usr/src" / f"linux-headers-{abi}" / "Makefile").is_file():
            raise HarnessError(f"the {abi} headers unpacked into the {spec.suite} build root have no Makefile")
        (root / HEADERS_MARKERS / f"{abi}.json").write_text(json.dumps(stamp))
        progress(f"build root {spec.suite}: {abi} headers installed in {time.monotonic() - t0:.1f} s")
        return root

    # In place: the root is shared by every kernel of its suite; the marker,
    # written last, is what publishes a kernel's headers.
    return cached(
        path,
        (base or _base()) / f"{spec.identity}.lock",
        lambda: path if headers_ready(path, abi, stamp) else None,
        unpack,
    )


@dataclass(frozen=True)
class KernelRoot:
    """A root holding one kernel's headers, ready to build against them."""

    spec: RootSpec
    path: Path
    abi: str
    overlays: tuple[Overlay, ...] = ()  # a derived kernel's own trees over its base's

    def make_modules(self, src: Path, jobs: int, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """kbuild of the module source folder `src` (bind-mounted at SRC_MOUNT);
        stdout and stderr in one stream, as a terminal would show them."""
        require_privileges()
        return subprocess.run(
            in_root_argv(self.path, make_argv(self.abi, jobs, extra), src, self.overlays),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def for_kernel(
    row: KernelRow, abi: str, mirrors: apt.Mirrors | None = None, overlays: tuple[Overlay, ...] = ()
) -> KernelRoot:
    """The root of a row's release with that kernel's headers installed (the
    .debs downloaded through the catalogue if needed).  A kernel built here
    has its object tree there already (debugkernel.py)."""
    if row.source is not None:
        spec = spec_for_row(row, mirrors)
        path = spec.path()
        if not (root_ready(path, spec) and (path / "usr/src" / f"linux-headers-{abi}" / "Makefile").is_file()):
            raise HarnessError(
                f"kernel {row.name}: its build tree for {abi} is gone from the build root; "
                f"build it again: harness fetch --kernel {row.name}"
            )
        return KernelRoot(spec, path, abi, overlays)
    spec = spec_for(row.release, mirrors)
    res, debs = apt.fetch(row)
    if res.abi != abi:
        raise HarnessError(
            f"kernel {row.name}: the catalogue now resolves {res.abi}, not {abi}; "
            "fetch the kernel again (harness kernels --refresh)"
        )
    stamp = {p.deb_name: p.sha256 for role in HEADER_ROLES for p in res.of(role)}
    return KernelRoot(spec, install_headers(spec, abi, header_debs(debs), stamp), abi)
