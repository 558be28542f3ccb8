"""Out-of-tree modules built for a kernel: the harness's own (race/kbuild.py
renders them) and any Kbuild directory of a user's.

Every build runs where that kernel's modules must be built: a packaged or
debug kernel in its suite's build root (buildroot.py), with the compiler and
kbuild tools of the release it was built in and its headers at the path they
expect; a local tree (localtree.py) on the host, against the tree, with the
compiler its .config names.  A user's directory is copied into the cache
first: kbuild writes its objects beside the sources, and nothing is written
into the user's tree.  Builds are cached by content (the source files'
bytes, the kernel's release, the build root's identity or a local tree's
content and compiler): a touched but unchanged file costs no compile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import HarnessError
from ..paths import cache_dir
from ..progress import progress
from ..util import cached, hash_inputs, read_json_object
from . import buildroot, debugkernel, derive, localtree
from .files import KernelFiles

MAKE_JOBS = 2
# No BTF for out-of-tree modules: pahole's view of a module against headers
# that carry no vmlinux BTF buys nothing and fails on some suites.
MAKE_EXTRA = ("CONFIG_DEBUG_INFO_BTF_MODULES=",)
KBUILD_FILES = ("Kbuild", "Makefile")
# A module directory, not a kernel tree or a home folder: past these it is bad input.
MAX_FILES = 2000
MAX_BYTES = 64 << 20
# What kbuild leaves in a module directory: never part of its key, never copied.
_PRODUCT = re.compile(r"(\.(o|ko|mod|a|cmd|d|order|symvers|dwo|lst)|\.mod\.c)$")
_SKIP_DIRS = {".git", ".hg", ".svn", ".tmp_versions", "__pycache__"}


@dataclass(frozen=True)
class ModuleBuild:
    """The .ko files of one module directory for one kernel release."""

    source: Path
    release: str
    ko_files: tuple[Path, ...]
    log: Path
    warnings: int
    cached: bool = False

    def ko(self, name: str) -> Path:
        for path in self.ko_files:
            if path.stem == name:
                return path
        raise HarnessError(
            f"no module {name!r} in the build of {self.source}; have: {', '.join(p.stem for p in self.ko_files)}"
        )


def build_identity(kernel: KernelFiles) -> str:
    """What the modules of this kernel are built with (enters every module key)."""
    if kernel.row.local is not None:
        return localtree.build_identity(kernel.row.local, kernel.version)
    # A derived kernel's modules build against its own tree, never its base's.
    ident = derive.ident_of(kernel.row)
    return buildroot.spec_for_row(kernel.row).identity + (f"+{ident}" if ident else "")


def compile_in(
    kernel: KernelFiles, src: Path, jobs: int = MAKE_JOBS, extra: Sequence[str] = MAKE_EXTRA
) -> subprocess.CompletedProcess:
    """kbuild's `modules` of the folder `src` for `kernel`, where its modules
    build; stdout and stderr in one stream, as a terminal shows them."""
    if kernel.row.local is not None:
        return localtree.make_modules(kernel.row.local, src, jobs, extra)
    layers = debugkernel.saved_overlays(kernel.row, kernel.release) if kernel.row.base else ()
    kroot = buildroot.for_kernel(kernel.row, kernel.release, overlays=layers)
    if kroot.spec.identity != build_identity(kernel).split("+")[0]:
        raise HarnessError(f"build root changed while building ({build_identity(kernel)} -> {kroot.spec.identity})")
    return kroot.make_modules(src, jobs, extra)


def source_files(src: Path) -> list[str]:
    """The module directory's own files (relative paths, sorted): what is
    copied and hashed.  Not a directory, no Kbuild/Makefile, or far too big
    for a module is one clear error."""
    if not src.is_dir():
        raise HarnessError(f"module source {src}: not a directory")
    if not any((src / name).is_file() for name in KBUILD_FILES):
        raise HarnessError(f"module source {src}: no Kbuild or Makefile (kbuild needs one naming obj-m)")
    out: list[str] = []
    total = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in _SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if _PRODUCT.search(path.name) or path.name.startswith(".") or path.name in ("modules.order", "Module.symvers"):
            continue
        out.append(str(rel))
        total += path.stat().st_size
        if len(out) > MAX_FILES or total > MAX_BYTES:
            raise HarnessError(
                f"module source {src}: more than {MAX_FILES} files or {MAX_BYTES >> 20} MiB; "
                "give the folder that holds the module's Kbuild"
            )
    return out


def source_key(kernel: KernelFiles, src: Path, files: Sequence[str], identity: str) -> str:
    """Content key of a module build: names and bytes of the sources, never their times."""
    return hash_inputs("modbuild", kernel.release, identity, *[part for rel in files for part in (rel, src / rel)])


_GCC_DIAG = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+)(?::\d+)?: (?:fatal )?error: (?P<msg>.*)$")
_MODPOST = re.compile(r"^ERROR: modpost: (?P<msg>.*?)(?: \[[^\]]*\])?(?P<tail> undefined!)?$")


def first_error(log: str, dirs: Sequence[str] = (buildroot.SRC_MOUNT,)) -> str:
    """The first error of a failed kbuild, as `file.c:12: message` with the
    path relative to the module directory (`dirs`: where it was built); else
    modpost's or make's first error, else the log's last line."""
    prefixes = [d.rstrip("/") + "/" for d in dirs]

    def local(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, "")
        return text

    make_error = None
    for line in log.splitlines():
        m = _GCC_DIAG.match(line.strip())
        if m:
            return f"{local(m['file'])}:{m['line']}: {m['msg']}"
        m = _MODPOST.match(line.strip())
        if m:
            return local(f"modpost: {m['msg']}{m['tail'] or ''}")
        if make_error is None and re.match(r"^make(\[\d+\])?: \*\*\* ", line):
            make_error = local(line.split("*** ", 1)[1])
    if make_error:
        return make_error
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return local(lines[-1]) if lines else "no output"


def warning_count(log: str) -> int:
    return sum(1 for ln in log.splitlines() if "warning:" in ln.lower())


def built_modules(build: Path) -> list[Path]:
    """The .ko files kbuild made, in modules.order's order (it lists .ko up to
    6.1 and .o from 6.2 on, relative to the module directory)."""
    order = build / "modules.order"
    out: list[Path] = []
    if order.is_file():
        for line in order.read_text().split():
            rel = line.removeprefix(buildroot.SRC_MOUNT + "/").removeprefix("./")
            ko = build / (rel[:-2] + ".ko" if rel.endswith(".o") else rel)
            if ko not in out:
                out.append(ko)
    return out or sorted(build.rglob("*.ko"))


def build_dir(kernel: KernelFiles, src: Path, *, jobs: int = MAKE_JOBS) -> ModuleBuild:
    """Build (or take from the cache) every module of the kbuild directory
    `src` for `kernel`.  A compile error is a HarnessError of one line with
    the first error and the full log's path."""
    src = Path(src).resolve()
    files = source_files(src)
    identity = build_identity(kernel)
    key = source_key(kernel, src, files, identity)
    base = cache_dir() / "modbuild"
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    manifest = final / "manifest.json"
    label = f"module {src.name} for {kernel.release}"

    def reuse() -> ModuleBuild | None:
        data = read_json_object(manifest) if manifest.is_file() else {}
        kos = [final / "src" / rel for rel in data.get("modules", [])]
        if not kos or not all(k.is_file() for k in kos):
            return None
        warnings = int(data.get("warnings", 0))
        progress(f"{label}: cached ({key})" + (f", {warnings} warning(s) in {final / 'build.log'}" if warnings else ""))
        return ModuleBuild(src, kernel.release, tuple(kos), final / "build.log", warnings, True)

    def build(tmp: Path) -> ModuleBuild:
        work = tmp / "src"
        for rel in files:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, work / rel)
        progress(f"{label}: building with {identity}")
        proc = compile_in(kernel, work, jobs)
        log = tmp / "build.log"
        log.write_text(proc.stdout)
        kept = base / f"{key}-failed.log"
        if proc.returncode != 0:
            shutil.copy(log, kept)  # the tmp folder goes away with the failed build
            raise HarnessError(
                f"{first_error(proc.stdout, (buildroot.SRC_MOUNT, str(work)))} (building {src.name} for {kernel.release}; "
                f"log: {kept})"
            )
        kos = built_modules(work)
        if not kos or not all(k.is_file() for k in kos):
            shutil.copy(log, kept)
            raise HarnessError(f"building {src.name} for {kernel.release} made no .ko (is obj-m set?); log: {kept}")
        kept.unlink(missing_ok=True)
        warnings = warning_count(proc.stdout)
        rels = [str(k.relative_to(work)) for k in kos]
        (tmp / "manifest.json").write_text(
            json.dumps(
                {
                    "release": kernel.release,
                    "identity": identity,
                    "source": str(src),
                    "modules": rels,
                    "warnings": warnings,
                }
            )
        )
        progress(
            f"{label}: built {', '.join(k.name for k in kos)}"
            + (f" with {warnings} warning(s), see {final / 'build.log'}" if warnings else "")
        )
        return ModuleBuild(src, kernel.release, tuple(final / "src" / r for r in rels), final / "build.log", warnings)

    return cached(final, base / f"{key}.lock", reuse, build, tmp=base / f"{key}.tmp")
