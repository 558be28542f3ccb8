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
from typing import Mapping, Sequence

from ..errors import HarnessError
from ..progress import progress
from ..util import need_tool, run_tool
from . import apt, buildroot, derive
from .kconfig import parse_config
from .table import KernelRow

# Written last into the object tree: the tree is whole and built from this source.
TREE_MARKER = ".harness-built.json"
PROGRESS_EVERY_S = 10.0
MAKE_JOBS = 2
# make's own variables for a reproducible build (derive.REPRODUCIBLE_ENV).
REPRODUCIBLE_MAKE = derive.REPRODUCIBLE_ENV
_OBJ_LINE = re.compile(r"^\s+(?:CC \[M\]|LD \[M\]|CC|AS|LD|AR)\s+(\S+)")


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
    """Options of `wanted` that olddefconfig did not keep ("CONFIG_X=y (got n)").
    An option "not set" that a newer kernel made a number is kept when it is
    0: BOOTPARAM_HUNG_TASK_PANIC was a bool up to 6.x and counts hung tasks
    before a panic in 7.x, where 0 is the old "not set"."""
    return [
        f"{option}={want} (got {final.get(option, 'n')})"
        for option, want in wanted.items()
        if final.get(option, "n") != want and not (want == "n" and final.get(option) in ("0", "0x0"))
    ]


def localversion(release: str, upstream: str) -> str:
    """CONFIG_LOCALVERSION that makes `make kernelrelease` print `release`."""
    if not release.startswith(upstream + "-"):
        raise HarnessError(f"release {release!r} does not start with {upstream!r}")
    return release[len(upstream) :]


def upstream_of(res: apt.ResolvedKernel) -> str:
    return res.version.split("-")[0].split("+")[0]


def wanted_config(row: KernelRow, res: apt.ResolvedKernel) -> dict[str, str]:
    """The row's fragments plus the release string and no automatic suffix."""
    assert row.fragments
    wanted = derive.fragment_options(row)
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


# ---------------------------------------------------------------- a derived kernel (derive.py)


def overlays(row: KernelRow, tree: Tree) -> tuple[buildroot.Overlay, ...]:
    """The derived kernel's upper layers over its base's source and object trees."""
    top = derive.overlay_dir(row, tree.release)
    targets = {"src": tree.src_in_root, "obj": tree.obj_in_root}
    for name in targets:
        (top / name / "upper").mkdir(parents=True, exist_ok=True)
        (top / name / "work").mkdir(parents=True, exist_ok=True)
    (top / "layers.json").write_text(json.dumps(targets))
    return saved_overlays(row, tree.release)


def saved_overlays(row: KernelRow, release: str) -> tuple[buildroot.Overlay, ...]:
    """The layers a built derived kernel's modules build through (what `overlays` wrote)."""
    top = derive.overlay_dir(row, release)
    try:
        targets = json.loads((top / "layers.json").read_text())
    except (OSError, ValueError):
        raise HarnessError(
            f"kernel {row.name}: its build tree is gone; build it again: harness fetch --kernel {row.name}"
        )
    return tuple(buildroot.Overlay(targets[n], top / n / "upper", top / n / "work") for n in ("src", "obj"))


_PATCHED = re.compile(r"^\+\+\+ (\S+)", re.M)
_HUNK_FAILED = re.compile(r"^Hunk #(\d+) FAILED at (\d+)", re.M)


def patched_files(text: str) -> list[str]:
    """The files a -p1 patch writes (its `+++ b/PATH` lines), /dev/null left out."""
    out = []
    for path in _PATCHED.findall(text):
        if path != "/dev/null":
            rel = path.split("/", 1)[1] if "/" in path else path
            if rel not in out:
                out.append(rel)
    return out


def stage_patches(row: KernelRow, lower: Path, upper: Path) -> None:
    """Apply the row's patches in order to the source's upper layer: each
    file a patch writes is first copied up from the base's source.  A patch
    that does not apply is one line naming it, the file and the hunk."""
    stamp = upper / ".harness-patched.json"
    want = [str(p) for p in row.patches]
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return
    need_tool("patch", "patch")
    shutil.rmtree(upper)
    upper.mkdir(parents=True)
    for patch in row.patches:
        text = patch.read_text(errors="replace")
        for rel in patched_files(text):
            if (lower / rel).is_file() and not (upper / rel).exists():
                (upper / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lower / rel, upper / rel)
        for dry in (True, False):
            argv = ["patch", "-p1", "--batch", "--forward", "--fuzz=0", "-d", str(upper), "-i", str(patch)]
            proc = subprocess.run(argv + (["--dry-run"] if dry else []), capture_output=True, text=True)
            if proc.returncode != 0:
                out = proc.stdout + proc.stderr
                file = re.findall(r"^(?:checking|patching) file (\S+)", out, re.M)
                hunk = _HUNK_FAILED.search(out)
                where = (
                    f"hunk #{hunk.group(1)} of {file[-1] if file else '?'} (at line {hunk.group(2)})"
                    if hunk
                    else (out.strip().splitlines() or ["patch failed"])[-1]
                )
                shutil.rmtree(upper)
                upper.mkdir(parents=True)
                raise HarnessError(f"--patch {patch.name}: does not apply to {row.source}: {where}; nothing built")
    stamp.write_text(json.dumps(want))


def freshen_patched(upper: Path) -> None:
    """The patched sources made newer than anything built: make rebuilds by
    time, and on a cold cache the patches are applied (to fail early) before
    the base is compiled, whose objects would then look newer than them."""
    now = time.time()
    for path in upper.rglob("*"):
        if path.is_file() and path.name != ".harness-patched.json":
            os.utime(path, (now, now))


def _configure_derived(row: KernelRow, tree: Tree, layers: Sequence[buildroot.Overlay]) -> None:
    """The base's .config with the row's options, through olddefconfig; an
    option it drops is one line naming it."""
    wanted = dict(derive.parse_option(o) for o in row.options)
    obj_upper = layers[1].upper
    config = obj_upper / ".config"
    if config.is_file() and parse_config(config.read_text()).items() >= wanted.items():
        return
    config.write_text(merge_config((tree.obj / ".config").read_text(), wanted))
    progress(f"kernel {row.name}: configuring over {tree.release}: {' '.join(row.options) or 'no options'}")
    _in_root(tree, [*_make(tree), "olddefconfig"], "make olddefconfig", layers=layers)
    missing = unmet(wanted, parse_config(config.read_text()))
    if missing:
        config.unlink()
        raise HarnessError(
            f"kernel {row.name}: olddefconfig dropped {len(missing)} option(s) of --kconfig: {', '.join(missing[:6])} "
            "(a dependency is missing or the option was renamed); nothing built"
        )


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
    layers = overlays(row, tree) if row.base is not None else ()
    if layers and not (tree.src / ".harness-unpacked").is_file():
        _unpack_source(row, tree, apt.download(res)[apt.Role.SOURCE][0])
    if layers:
        # Before anything is built: a patch that does not apply stops here.
        stage_patches(row, tree.src, layers[0].upper)
    if not tree.ready():
        debs = apt.download(res)
        _unpack_source(row, tree, debs[apt.Role.SOURCE][0])
        _configure(row, res, tree)
        _compile(row, tree, dest.parent / "build.log")
        (tree.obj / TREE_MARKER).write_text(json.dumps({"release": tree.release}))
    if layers:
        _configure_derived(row, tree, layers)
        freshen_patched(layers[0].upper)
        _compile(row, tree, dest.parent / "build.log", layers)
    _install(row, tree, dest, layers)


def _make(tree: Tree) -> list[str]:
    """make in the tree, reproducibly: the same inputs give the same vmlinux,
    so a derived kernel whose change is all in modules has its base's."""
    return ["make", "-C", tree.src_in_root, f"O={tree.obj_in_root}", *REPRODUCIBLE_MAKE]


def _in_root(
    tree: Tree, argv: list[str], what: str, fix: str = "", layers: Sequence[buildroot.Overlay] = ()
) -> subprocess.CompletedProcess:
    proc = run_tool(buildroot.in_root_argv(tree.root, argv, overlays=layers), check=False)
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
    make = _make(tree)
    fragments = " + ".join(f"kconfigs/{f}" for f in row.fragments)
    progress(f"kernel {row.name}: configuring (x86_64_defconfig + kvm_guest.config + {fragments})")
    _in_root(tree, [*make, "x86_64_defconfig", "kvm_guest.config"], "make defconfig kvm_guest.config")
    wanted = wanted_config(row, res)
    config = tree.obj / ".config"
    config.write_text(merge_config(config.read_text(), wanted))
    _in_root(tree, [*make, "olddefconfig"], "make olddefconfig")
    missing = unmet(wanted, parse_config(config.read_text()))
    if missing:
        raise HarnessError(
            f"kernel {row.name}: olddefconfig dropped {len(missing)} option(s) of "
            f"{fragments}: {', '.join(missing[:6])}; fix the fragment "
            "(a dependency is missing or the option was renamed)"
        )


def _compile(row: KernelRow, tree: Tree, log_path: Path, layers: Sequence[buildroot.Overlay] = ()) -> None:
    """make all, with a progress line every PROGRESS_EVERY_S instead of make's output."""
    argv = buildroot.in_root_argv(tree.root, [*_make(tree), f"-j{MAKE_JOBS}", "all"], overlays=layers)
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


def _install(row: KernelRow, tree: Tree, dest: Path, layers: Sequence[buildroot.Overlay] = ()) -> None:
    """modules_install into the root, then move the kernel into `dest`."""
    rel = tree.release
    install = tree.install_in_root + (f"-{derive.ident_of(row)}" if layers else "")
    staged = tree.root / install.lstrip("/")
    shutil.rmtree(staged, ignore_errors=True)
    progress(f"kernel {row.name}: installing modules")
    boot_files = {
        "vmlinux": "vmlinux",
        "arch/x86/boot/bzImage": "vmlinuz",
        ".config": "config",
        "System.map": "System.map",
    }
    # Through the namespace: a derived kernel's tree is only whole there.
    copy = " && ".join(f"cp {tree.obj_in_root}/{src} {install}/{name}-{rel}" for src, name in boot_files.items())
    _in_root(
        tree,
        [*_make(tree), "-s", f"INSTALL_MOD_PATH={install}", "INSTALL_MOD_STRIP=1", "modules_install"],
        "make modules_install",
        layers=layers,
    )
    _in_root(tree, ["sh", "-c", copy], "copying the kernel out of its tree", layers=layers)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "boot").mkdir(parents=True)
    (dest / "lib" / "modules").mkdir(parents=True)
    mods = staged / "lib" / "modules" / rel
    for link in ("build", "source"):  # absolute links into the root
        (mods / link).unlink(missing_ok=True)
    shutil.move(mods, dest / "lib" / "modules" / rel)
    for name in boot_files.values():
        shutil.move(staged / f"{name}-{rel}", dest / "boot" / f"{name}-{rel}")
    shutil.rmtree(staged, ignore_errors=True)
