"""Splats with file and line: each frame of a report decoded by the kernel's
own `scripts/decode_stacktrace.sh` (addr2line, nm and readelf underneath),
given a vmlinux with DWARF and the modules' .ko files with theirs.

Which kernels can: a debug kernel built with DWARF
(`--kconfig CONFIG_DEBUG_INFO_DWARF5=y --kconfig CONFIG_DEBUG_INFO_NONE=n`),
whose source tree holds the script.  Without DWARF a report keeps its
function+offset frames, and the decoder says why (`decoder_for`)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..kernels import debuginfo
from ..kernels.vmlinux import symbols_of
from ..paths import cache_dir
from ..util import run_tool
from .modtree import module_name, paths_by_name
from .splat import Splat

if TYPE_CHECKING:
    from ..kernels.files import KernelFiles

SCRIPT = "scripts/decode_stacktrace.sh"


@dataclass(frozen=True)
class Decoder:
    script: Path  # the kernel's decode_stacktrace.sh
    vmlinux: Path  # with DWARF
    modules: dict[str, Path]  # module name -> its .ko (with DWARF where built so)


def _script_of(kernel: KernelFiles) -> Path | None:
    """The decode script of the kernel's own source (an O= object tree links
    its source as `source`); for a Debian kernel, whose headers have none,
    the script of a kernel source the cache holds (it reads any release's
    traces: it only runs nm, readelf and addr2line on the files it is given)."""
    for tree in (kernel.headers_dir / "source", kernel.headers_dir):
        if (tree / SCRIPT).is_file():
            return tree / SCRIPT
    for found in sorted((cache_dir() / "buildroots").glob(f"*/usr/src/linux-source-*/{SCRIPT}")):
        return found
    return None


def decoder_for(kernel: KernelFiles, own_modules: Sequence[Path] = ()) -> tuple[Decoder | None, str]:
    """A decoder for the kernel's splats, or None and why there is none."""
    vmlinux, why = symbols_of(kernel)
    if not vmlinux or why:
        return None, why or "no vmlinux"
    script = _script_of(kernel)
    if script is None:
        return None, f"no {SCRIPT} in the kernel's tree"
    if not shutil.which("addr2line"):
        return None, "addr2line not found; install it with: apt-get install binutils"
    mods: dict[str, Path] = {}
    dep = kernel.modules_dir / "modules.dep"
    with_dwarf = debuginfo.modules_dir(kernel) or kernel.modules_dir  # Debian's -dbg ones, where fetched
    if dep.is_file():
        mods = {name: with_dwarf / rel for name, rel in paths_by_name(dep.read_text()).items()}
    for ko in own_modules:
        mods[module_name(ko)] = Path(ko)
    return Decoder(script, Path(vmlinux), mods), ""


def decode(dec: Decoder, splats: Sequence[Splat]) -> list[Splat]:
    """The splats with their `decoded` lines; a splat the script cannot read is left as it was."""
    out = []
    for s in splats:
        with tempfile.TemporaryDirectory(prefix="harness-decode-") as tmp:
            # The script finds a module's .ko by name under one folder: the
            # modules this splat names, linked into one.
            for name in {*s.modules, *([s.last_unloaded] if s.last_unloaded else [])}:
                ko = dec.modules.get(name.split("(")[0].strip())
                if ko is not None and ko.is_file() and ko.suffix == ".ko":
                    (Path(tmp) / ko.name).symlink_to(ko)
            proc = run_tool(
                ["bash", dec.script, dec.vmlinux, "", tmp],
                input="\n".join(s.lines) + "\n",
                what="decode_stacktrace.sh",
                check=False,
            )
        lines = tuple(proc.stdout.splitlines())
        out.append(replace(s, decoded=lines) if proc.returncode == 0 and lines else s)
    return out
