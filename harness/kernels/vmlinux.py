"""The ELF vmlinux out of a bzImage: booted through its PVH entry, it skips
seconds of decompression under TCG."""

from __future__ import annotations

import lzma
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError
from ..util import last_line, need_tool, run_tool

if TYPE_CHECKING:
    from .files import KernelFiles


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
            raise HarnessError(
                f"could not extract an ELF kernel from {vmlinuz}: "
                f"zstd: {last_line(proc.stderr) or f'exit status {proc.returncode}'}"
            )
    if not payload.startswith(b"\x7fELF"):
        raise HarnessError(f"could not extract an ELF kernel from {vmlinuz}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, out)


def symbols_of(kernel: "KernelFiles") -> tuple[str, str]:
    """The kernel's vmlinux if it has a symbol table, for reading a vmcore
    (drgn, crash, gdb); else "" and what would have one."""
    from . import debuginfo

    path = debuginfo.vmlinux(kernel) or kernel.vmlinux
    if not path.is_file():
        return "", f"no vmlinux of {kernel.release} in the cache"
    sections = run_tool(["readelf", "-S", "-W", path], what="readelf").stdout
    if ".symtab" not in sections:
        return "", (
            f"{path.name} has no symbols; fetch Debian's with: python -m harness fetch --kernel {kernel.name} "
            "--debug-info (a kernel built here: --kconfig debuginfo)"
        )
    if ".debug_info" not in sections:
        return str(path), "symbols, no DWARF: drgn and crash need a kernel built with --kconfig debuginfo"
    return str(path), ""
