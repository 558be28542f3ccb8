"""gdb on a running guest: QEMU's gdb stub started through the monitor, and
a gdb script that knows the guest's kernel and module symbols.

The stub is started at run time (HMP `gdbserver`), not with `-s` on QEMU's
command line: a restored guest's command line is its snapshot's key, and a
stub started later leaves it, and the snapshot, as they are.

Symbols come from the guest itself, so they match its KASLR layout:
- the kernel's, from /proc/kallsyms, made into an ELF symbol file with the
  binutils assembler and linker: functions in one NOBITS text section (so
  gdb can break on them and name addresses), data as absolute symbols (so
  `p *(long *)&jiffies_64` reads them);
- each loaded module's, from its .ko (the kernel's own, or the guest's
  extra ones copied out of the guest) at the section addresses in
  /sys/module/NAME/sections.

Without debug info gdb knows names and addresses, not types or lines.
"""

from __future__ import annotations

import base64
import gzip
import lzma
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError
from ..paths import build_dir
from ..util import need_tool, run_tool
from .modtree import paths_by_name
from .qemu import free_port

if TYPE_CHECKING:
    from .vm import Vm

# kallsyms types: text (functions) and data; the rest (absolute, percpu
# offsets, unknown) are left out.
TEXT_TYPES = frozenset("tTwW")
DATA_TYPES = frozenset("dDbBrRvV")
KERNEL_TEXT_MIN = 0xFFFFFFFF80000000  # below it: per-CPU offsets, not addresses
# The sections gdb needs placed: code, and the data a breakpoint's `print` reads.
_SYMBOL_RE = re.compile(r"^[A-Za-z_.$][\w.$]*$")  # what the assembler takes as a name
MODULE_SECTIONS = (".text", ".init.text", ".exit.text", ".data", ".rodata", ".bss")


@dataclass(frozen=True)
class LoadedModule:
    name: str
    ko: Path  # on the host
    sections: dict[str, int]  # section name -> load address


@dataclass(frozen=True)
class GdbSetup:
    """A guest's gdb stub and the script that connects to it."""

    port: int
    script: Path

    @property
    def command(self) -> str:
        return f"gdb -q -x {shlex.quote(str(self.script))}"


def kallsyms_assembly(kallsyms: str) -> tuple[str, int]:
    """An assembler file defining the kernel's symbols of /proc/kallsyms (its
    module symbols left out: their .ko files carry them), and the address its
    text section starts at."""
    text: dict[str, int] = {}
    data: dict[str, int] = {}
    for line in kallsyms.splitlines():
        parts = line.split()
        if len(parts) != 3:  # module symbols have a fourth field, [module]
            continue
        addr_s, kind, name = parts
        try:
            addr = int(addr_s, 16)
        except ValueError:
            continue
        if addr < KERNEL_TEXT_MIN or not _SYMBOL_RE.match(name):
            continue
        if kind in TEXT_TYPES:
            text.setdefault(name, addr)
        elif kind in DATA_TYPES:
            data.setdefault(name, addr)
    if not text:
        raise HarnessError("the guest's /proc/kallsyms shows no kernel addresses (kptr_restrict?)")
    base = min(text.values())
    out = ['.section .ktext,"ax",@nobits']
    for name, addr in sorted(text.items(), key=lambda kv: kv[1]):
        out += [f".org {addr - base:#x}", f".globl {name}", f".type {name},@function", f"{name}:"]
    out.append(".skip 0x100000")  # the last function has a body too (NOBITS: no room in the file)
    for name, addr in sorted(data.items()):
        if name in text:
            continue
        out += [f".globl {name}", f".type {name},@object", f".set {name},{addr:#x}"]
    out.append("")
    return "\n".join(out), base


def kernel_symbol_file(kallsyms: str, out: Path) -> Path:
    """The ELF symbol file of the guest's kernel symbols, made with as and ld."""
    need_tool("as", "binutils")
    need_tool("ld", "binutils")
    asm, base = kallsyms_assembly(kallsyms)
    src = out.with_suffix(".s")
    obj = out.with_suffix(".o")
    src.write_text(asm)
    run_tool(["as", "-o", obj, src], what="as (the kernel's symbols for gdb)")
    run_tool(
        ["ld", "-nostdlib", "-e", "0", f"--section-start=.ktext={base:#x}", "-o", out, obj],
        what="ld (the kernel's symbols for gdb)",
    )
    src.unlink()
    obj.unlink()
    return out


def gdb_script(port: int, symbols: Path, modules: list[LoadedModule]) -> str:
    lines = ["set pagination off", "set confirm off", f"file {symbols}"]
    for m in modules:
        text = m.sections.get(".text")
        if text is None:
            continue
        rest = " ".join(f"-s {name} {addr:#x}" for name, addr in m.sections.items() if name != ".text")
        lines.append(f"add-symbol-file {m.ko} {text:#x} {rest}".rstrip())
    lines.append(f"target remote 127.0.0.1:{port}")
    return "\n".join(lines) + "\n"


def _unpacked(data: bytes, name: str) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".zst"):
        need_tool("zstd", "zstd")
        return bytes(run_tool(["zstd", "-dcq"], input=data, text=False, what=f"zstd ({name})").stdout)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _module_file(vm: Vm, name: str, guest_path: str, folder: Path) -> Path:
    """The module's .ko on the host: the kernel's own from its tree, an extra
    one (ours, a test's) copied out of the guest."""
    kernel = vm.image.kernel
    rel = guest_path.split(f"/lib/modules/{kernel.release}/", 1)[-1]
    local = kernel.modules_dir / rel
    if local.is_file() and not rel.startswith("extra/"):
        data = local.read_bytes()
    else:
        res = vm.ssh.run(f"base64 {shlex.quote(guest_path)}", timeout=60)
        if not res.ok:
            raise HarnessError(f"could not copy {guest_path} out of the guest: {res.stderr.strip()}")
        data = base64.b64decode(res.stdout)
    out = folder / f"{name}.ko"
    out.write_bytes(_unpacked(data, guest_path))
    return out


def _loaded_modules(vm: Vm, folder: Path) -> list[LoadedModule]:
    ssh = vm.ssh
    names = [ln.split()[0] for ln in ssh.run("cat /proc/modules", timeout=30, check=True).stdout.splitlines() if ln]
    if not names:
        return []
    paths = paths_by_name(ssh.run("cat /lib/modules/$(uname -r)/modules.dep", timeout=30, check=True).stdout)
    q = " ".join(shlex.quote(n) for n in names)
    sections_out = ssh.run(
        f"for m in {q}; do for s in /sys/module/$m/sections/.*; do echo $m ${{s##*/}} $(cat $s); done; done", timeout=60
    ).stdout
    sections: dict[str, dict[str, int]] = {}
    for line in sections_out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in MODULE_SECTIONS:
            try:
                sections.setdefault(parts[0], {})[parts[1]] = int(parts[2], 16)
            except ValueError:
                continue
    release = vm.image.kernel.release
    found = []
    for name in names:
        if name not in paths or ".text" not in sections.get(name, {}):
            continue
        ko = _module_file(vm, name, f"/lib/modules/{release}/{paths[name]}", folder)
        found.append(LoadedModule(name, ko, sections[name]))
    return found


def start(vm: Vm) -> GdbSetup:
    """Start the guest's gdb stub on a free local port and write the script
    that loads the symbols of its kernel and of the modules loaded now."""
    need_tool("gdb", "gdb")
    if vm.qmp is None or not vm.alive():
        raise HarnessError("--gdb: the guest is not running")
    folder = build_dir() / "gdb" / f"{time.strftime('%Y%m%d-%H%M%S')}-{vm.port}"
    folder.mkdir(parents=True, exist_ok=True)
    kallsyms = vm.ssh.run("cat /proc/kallsyms", timeout=120, check=True).stdout
    symbols = kernel_symbol_file(kallsyms, folder / "kernel-symbols.elf")
    modules = _loaded_modules(vm, folder)
    port = free_port()
    said = vm.qmp.hmp(f"gdbserver tcp:127.0.0.1:{port}")
    if said and "Waiting for gdb" not in said:
        raise HarnessError(f"QEMU did not start its gdb stub: {said.strip()}")
    script = folder / "gdbinit"
    script.write_text(gdb_script(port, symbols, modules))
    return GdbSetup(port, script)
