"""Is a file a kernel module for this kernel?  Checked before anything boots.

A module is a relocatable ELF64 object with a `.modinfo` section of
NUL-separated `key=value` strings; the first word of its `vermagic` is the
kernel release it was built for.  The section table is read with `struct`,
so no binutils are needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_REL = 1
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr


@dataclass(frozen=True)
class ModInfo:
    path: Path
    name: str
    vermagic: str
    fields: tuple[tuple[str, str], ...]

    @property
    def release(self) -> str:
        return self.vermagic.split()[0] if self.vermagic else ""


def sections(data: bytes, label: str) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF64 file."""
    if data[:4] != _ELF_MAGIC:
        raise HarnessError(f"{label} is not an ELF file")
    if len(data) < _EHDR.size:
        raise HarnessError(f"{label} is not a valid ELF file (truncated header)")
    (
        ident,
        e_type,
        _mach,
        _ver,
        _entry,
        _phoff,
        shoff,
        _flags,
        _ehsize,
        _phentsize,
        _phnum,
        shentsize,
        shnum,
        shstrndx,
    ) = _EHDR.unpack_from(data)
    if ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB:
        raise HarnessError(f"{label} is not a 64-bit little-endian ELF file: not an x86-64 kernel module")
    if e_type != _ET_REL:
        raise HarnessError(f"{label} is an ELF executable or library, not a kernel module (.ko)")
    if shentsize != _SHDR.size or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        raise HarnessError(f"{label} is not a valid ELF file (bad section table)")
    headers = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]

    def body(h: tuple) -> bytes:
        offset, size = h[4], h[5]
        if offset + size > len(data):
            raise HarnessError(f"{label} is not a valid ELF file (section past the end of the file)")
        return data[offset : offset + size]

    names = body(headers[shstrndx])
    out = {}
    for h in headers:
        end = names.find(b"\0", h[0])
        out[names[h[0] : end if end >= 0 else len(names)].decode(errors="replace")] = body(h)
    return out


def parse_modinfo(data: bytes, label: str) -> tuple[tuple[str, str], ...]:
    modinfo = sections(data, label).get(".modinfo")
    if modinfo is None:
        raise HarnessError(f"{label} has no .modinfo section: not a kernel module")
    fields = []
    for entry in modinfo.split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            fields.append((key, value))
    return tuple(fields)


def check_module(path: Path, release: str) -> ModInfo:
    """The module's modinfo, or a HarnessError saying why it cannot load on `release`."""
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise HarnessError(f"module {label} does not exist")
    fields = parse_modinfo(path.read_bytes(), label)
    info = dict(fields)
    vermagic = info.get("vermagic", "").strip()
    mod = ModInfo(path, info.get("name", path.name.removesuffix(".ko")), vermagic, fields)
    if not vermagic:
        raise HarnessError(f"{label} has no vermagic in .modinfo: not a module built by kbuild")
    if mod.release != release:
        raise HarnessError(f"{label} was built for {mod.release} (vermagic {vermagic!r}), not {release}")
    return mod
