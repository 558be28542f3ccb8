"""Tiny ELF64 objects built by hand, for tests that need a (fake) kernel module."""

from __future__ import annotations

import struct

RELEASE = "6.1.0-99-amd64"


def elf_object(section_list: dict[str, bytes], e_type: int = 1, elf_class: int = 2) -> bytes:
    """A little-endian ELF64 file of type e_type (1: relocatable, like a .ko) with these sections."""
    names = [""] + list(section_list) + [".shstrtab"]
    shstrtab = b"\0".join(n.encode() for n in names) + b"\0"
    bodies = [b""] + list(section_list.values()) + [shstrtab]
    offset = 64
    blob = b""
    placed = []
    for body in bodies:
        placed.append((offset + len(blob), len(body)))
        blob += body
    shoff = offset + len(blob)
    name_offsets = []
    pos = 0
    for n in names:
        name_offsets.append(pos)
        pos += len(n.encode()) + 1
    shdrs = b"".join(
        struct.pack("<IIQQQQIIQQ", name_offsets[i], 1 if i else 0, 0, 0, off, size, 0, 0, 1, 0)
        for i, (off, size) in enumerate(placed)
    )
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, e_type, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(names), len(names) - 1
    )
    return ehdr + blob + shdrs


def fake_module(vermagic: str = f"{RELEASE} SMP preempt mod_unload modversions ", name: str = "fake") -> bytes:
    modinfo = f"license=GPL\0name={name}\0vermagic={vermagic}\0".encode()
    return elf_object({".text": b"\xc3", ".modinfo": modinfo})
