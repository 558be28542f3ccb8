"""Kernels built here from Debian's source: the debug kernel (lockdep, KASAN).

No Debian kernel package has lockdep or KASAN, so a row of the kernel table with a
``source`` is built from its release's ``linux-source-X.Y`` package:
``x86_64_defconfig`` + the kernel's own ``kvm_guest.config`` + the row's
fragment under ``kconfigs/``, then ``olddefconfig``.  It is built once per
release string, which hashes the source package, the fragment and this file
(apt/walk.py, source_release), inside the release's build root (buildroot.py:
its compiler, plus what a kernel build needs).

The object tree stays in that root as ``/usr/src/linux-headers-<release>``,
where Debian's headers would be: out-of-tree modules build against it the
same way.  The kernel and its modules go to the kernel cache like an
unpacked Debian kernel (kernels.py), so images and VMs need nothing new.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import HarnessError
from ..progress import progress
from ..util import need_tool, run_tool
from . import apt, buildroot
from .kconfig import parse_config
from .table import KernelRow

# Written last into the object tree: the tree is whole and built from this source.
TREE_MARKER = ".harness-built.json"
PROGRESS_EVERY_S = 10.0
MAKE_JOBS = 2
_OBJ_LINE = re.compile(r"^\s+(?:CC|AS|LD|AR|CC \[M\]|LD \[M\])\s+(\S+)")


# ---------------------------------------------------------------- config (pure)


def _line(key: str, val: str) -> str:
    return f"# {key} is not set" if val == "n" else f"{key}={val}"


def merge_config(base: str, fragment: Mapping[str, str]) -> str:
    """`base` (.config text) with every option of `fragment` set its way:
    lines replaced in place, new ones appended, later fragments winning."""
    done: set[str] = set()
    out: list[str] = []
    for line in base.splitlines():
        opts = parse_config(line)
        key = next(iter(opts), None)
        if key is not None and key in fragment:
            out.append(_line(key, fragment[key]))
            done.add(key)
        else:
            out.append(line)
    out += [_line(k, v) for k, v in fragment.items() if k not in done]
    return "\n".join(out) + "\n"


def unmet(wanted: Mapping[str, str], final: Mapping[str, str]) -> list[str]:
    """Options of `wanted` that olddefconfig did not keep ("CONFIG_X=y (got n)")."""
    return [
        f"{option}={want} (got {final.get(option, 'n')})"
        for option, want in wanted.items()
        if final.get(option, "n") != want
    ]


def localversion(release: str, upstream: str) -> str:
    """CONFIG_LOCALVERSION that makes `make kernelrelease` print `release`."""
    if not release.startswith(upstream + "-"):
        raise HarnessError(f"release {release!r} does not start with {upstream!r}")
    return release[len(upstream) :]


def upstream_of(res: apt.ResolvedKernel) -> str:
    return res.version.split("-")[0].split("+")[0]


def wanted_config(row: KernelRow, res: apt.ResolvedKernel) -> dict[str, str]:
    """The row's fragment plus the release string and no automatic suffix."""
    assert row.fragment_path is not None
    try:
        wanted = parse_config(row.fragment_path.read_text())
    except OSError as e:
        raise HarnessError(
            f"kernel {row.name}: cannot read its config fragment {row.fragment_path}: {e.strerror}"
        ) from None
    wanted["CONFIG_LOCALVERSION"] = f'"{localversion(res.abi, upstream_of(res))}"'
    wanted["CONFIG_LOCALVERSION_AUTO"] = "n"
    return wanted


# ---------------------------------------------------------------- where things are


@dataclass(frozen=True)
class Tree:
    """A kernel's source and object trees inside its build root."""

    root: Path  # the build root
    release: str
    source_dir: str  # "linux-source-6.12.118-<sha8>" under /usr/src

    @property
    def obj_in_root(self) -> str:
        return f"/usr/src/linux-headers-{self.release}"

    @property
    def src_in_root(self) -> str:
        return f"/usr/src/{self.source_dir}"

    @property
    def obj(self) -> Path:
        return self.root / self.obj_in_root.lstrip("/")

    @property
    def src(self) -> Path:
        return self.root / self.src_in_root.lstrip("/")

    @property
    def install_in_root(self) -> str:
        return f"/usr/src/.install-{self.release}"

    def ready(self) -> bool:
        try:
            data = json.loads((self.obj / TREE_MARKER).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("release") == self.release


def tree_of(row: KernelRow, res: apt.ResolvedKernel, root: Path | None = None) -> Tree:
    (pkg,) = res.of(apt.Role.SOURCE)
    spec = buildroot.spec_for_row(row)
    return Tree(root or spec.path(), res.abi, f"{row.source}-{res.version}-{pkg.sha256[:8]}")


def tree_ready(row: KernelRow, res: apt.ResolvedKernel) -> bool:
    return tree_of(row, res).ready()


# ---------------------------------------------------------------- the build


def build(row: KernelRow, res: apt.ResolvedKernel, dest: Path) -> None:
    """Build the kernel of `res` (unless its tree in the build root is whole)
    and install it into `dest` as boot/{vmlinux,vmlinuz,config,System.map}-R
    and lib/modules/R."""
    need_tool("tar", "tar")
    need_tool("dpkg", "dpkg")
    spec = buildroot.spec_for_row(row)
    root = buildroot.ensure_root(spec)
    tree = tree_of(row, res, root)
    if not tree.ready():
        debs = apt.download(res)
        _unpack_source(row, tree, debs[apt.Role.SOURCE][0])
        _configure(row, res, tree)
        _compile(row, tree, dest.parent / "build.log")
        (tree.obj / TREE_MARKER).write_text(json.dumps({"release": tree.release}))
    _install(row, tree, dest)


def _in_root(tree: Tree, argv: list[str], what: str, fix: str = "") -> subprocess.CompletedProcess:
    proc = run_tool(buildroot.in_root_argv(tree.root, argv), check=False)
    if proc.returncode != 0:
        detail = first_error(proc.stderr + "\n" + proc.stdout) or f"exit status {proc.returncode}"
        raise HarnessError(f"{what} failed: {detail}" + (f" ({fix})" if fix else ""))
    return proc


def _unpack_source(row: KernelRow, tree: Tree, deb: Path) -> None:
    if (tree.src / "Makefile").is_file() and (tree.src / ".harness-unpacked").is_file():
        return
    t0 = time.monotonic()
    progress(f"kernel {row.name}: unpacking {deb.name}")
    tmp = tree.src.with_name(f".{tree.src.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(tree.src, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_tool(["dpkg", "-x", deb, tmp / "deb"], what=f"dpkg -x {deb.name}", fix=f"delete {deb} and retry")
    tarballs = sorted((tmp / "deb" / "usr" / "src").glob("linux-source-*.tar.*"))
    if len(tarballs) != 1:
        raise HarnessError(f"{deb.name} holds no single linux-source tarball under /usr/src")
    run_tool(["tar", "-xf", tarballs[0], "-C", tmp], what=f"tar -xf {tarballs[0].name}")
    shutil.rmtree(tmp / "deb")
    (top,) = [p for p in tmp.iterdir() if p.is_dir()]
    (top / ".harness-unpacked").write_text("")
    os.rename(top, tree.src)
    tmp.rmdir()
    progress(f"kernel {row.name}: source unpacked in {time.monotonic() - t0:.0f} s")


def _configure(row: KernelRow, res: apt.ResolvedKernel, tree: Tree) -> None:
    # Trees of this row's earlier recipes or fragments: a new release replaces them.
    for old in tree.obj.parent.glob(f"linux-headers-*-{row.flavour}-*"):
        if old != tree.obj:
            progress(f"kernel {row.name}: removing the old build tree {old.name}")
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tree.obj, ignore_errors=True)
    tree.obj.mkdir(parents=True)
    make = ["make", "-C", tree.src_in_root, f"O={tree.obj_in_root}"]
    progress(f"kernel {row.name}: configuring (x86_64_defconfig + kvm_guest.config + kconfigs/{row.fragment})")
    _in_root(tree, [*make, "x86_64_defconfig", "kvm_guest.config"], "make defconfig kvm_guest.config")
    wanted = wanted_config(row, res)
    config = tree.obj / ".config"
    config.write_text(merge_config(config.read_text(), wanted))
    _in_root(tree, [*make, "olddefconfig"], "make olddefconfig")
    missing = unmet(wanted, parse_config(config.read_text()))
    if missing:
        raise HarnessError(
            f"kernel {row.name}: olddefconfig dropped {len(missing)} option(s) of "
            f"kconfigs/{row.fragment}: {', '.join(missing[:6])}; fix the fragment "
            "(a dependency is missing or the option was renamed)"
        )


def _compile(row: KernelRow, tree: Tree, log_path: Path) -> None:
    """make all, with a progress line every PROGRESS_EVERY_S instead of make's output."""
    argv = buildroot.in_root_argv(
        tree.root, ["make", "-C", tree.src_in_root, f"O={tree.obj_in_root}", f"-j{MAKE_JOBS}", "all"]
    )
    progress(f"kernel {row.name}: building {tree.release} with {MAKE_JOBS} jobs (log: {log_path})")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = last = time.monotonic()
    objects = 0
    current = ""
    with (
        open(log_path, "w") as log,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = _OBJ_LINE.match(line)
            if m:
                objects += 1
                current = m.group(1)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                progress(f"kernel {row.name}: building, {_mmss(now - t0)}, {objects} files done, at {current}")
    if proc.returncode != 0:
        detail = first_error(log_path.read_text(errors="replace")) or f"exit status {proc.returncode}"
        raise HarnessError(f"kernel {row.name}: build failed: {detail} (log: {log_path})")
    got = (tree.obj / "include" / "config" / "kernel.release").read_text().strip()
    if got != tree.release:
        raise HarnessError(f"kernel {row.name}: the build's release is {got!r}, expected {tree.release!r}")
    progress(f"kernel {row.name}: built in {_mmss(time.monotonic() - t0)} ({objects} files)")


def first_error(log: str) -> str | None:
    """The line of a make log that says what went wrong (make's own "***"
    lines only repeat that a sub-make failed)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for pattern in (r"error:|not found|No such file|No rule to make", r"\*\*\*"):
        for ln in lines:
            if re.search(pattern, ln):
                return ln
    return lines[-1] if lines else None


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _install(row: KernelRow, tree: Tree, dest: Path) -> None:
    """modules_install into the root, then move the kernel into `dest`."""
    rel = tree.release
    staged = tree.root / tree.install_in_root.lstrip("/")
    shutil.rmtree(staged, ignore_errors=True)
    progress(f"kernel {row.name}: installing modules")
    _in_root(
        tree,
        [
            "make",
            "-C",
            tree.src_in_root,
            f"O={tree.obj_in_root}",
            "-s",
            f"INSTALL_MOD_PATH={tree.install_in_root}",
            "INSTALL_MOD_STRIP=1",
            "modules_install",
        ],
        "make modules_install",
    )
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "boot").mkdir(parents=True)
    (dest / "lib" / "modules").mkdir(parents=True)
    mods = staged / "lib" / "modules" / rel
    for link in ("build", "source"):  # absolute links into the root
        (mods / link).unlink(missing_ok=True)
    shutil.move(mods, dest / "lib" / "modules" / rel)
    shutil.rmtree(staged, ignore_errors=True)
    for src, name in (
        ("vmlinux", "vmlinux"),
        ("arch/x86/boot/bzImage", "vmlinuz"),
        (".config", "config"),
        ("System.map", "System.map"),
    ):
        shutil.copyfile(tree.obj / src, dest / "boot" / f"{name}-{rel}")
