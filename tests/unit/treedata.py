"""Fake local kernels on disk: build trees and installed roots with the files
discovery looks at (tiny ELF images, a .config, modules.order, .ko files)."""

from __future__ import annotations

import struct
from pathlib import Path

from elfdata import fake_module
from harness.kernels import localtree

RELEASE = "6.12.118-local"
CC_TEXT = "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"


def note(name: bytes, ntype: int, desc: bytes = b"\0" * 4) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


def elf_kernel(notes: bytes = note(b"Xen", localtree.XEN_ELFNOTE_PHYS32_ENTRY)) -> bytes:
    """An ELF64 executable whose one program header is a PT_NOTE over `notes`."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", localtree.PT_NOTE, 4, 120, 0, 0, len(notes), len(notes), 4)
    return ehdr + phdr + notes


def guest_config(**changes: str | None) -> str:
    """A .config with every option the guest needs, as the fragment says,
    then `changes` (None: drop the option)."""
    opts = {k: ("y" if v == "n" else v) for k, v in localtree.guest_needs(localtree.GUEST_FRAGMENT.read_text()).items()}
    opts["CONFIG_MODULE_SIG_FORCE"] = "n"
    opts["CONFIG_CC_VERSION_TEXT"] = f'"{CC_TEXT}"'
    for k, v in changes.items():
        if v is None:
            opts.pop(k, None)
        else:
            opts[k] = v
    return "".join(f"# {k} is not set\n" if v == "n" else f"{k}={v}\n" for k, v in opts.items())


MODULES = ("fs/minix/minix", "drivers/net/dummy")


def build_tree(
    dest: Path,
    *,
    pvh: bool = True,
    bzimage: bool = True,
    order_form: str = ".o",
    config: str | None = None,
    release: str = RELEASE,
    modules: tuple[str, ...] = MODULES,
    built: bool = True,
) -> Path:
    """A build tree after `make`: modules.order in the 6.2+ form (.o) or the
    6.1 one (.ko)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ".config").write_text(config if config is not None else guest_config())
    if not built:
        return dest
    (dest / "include" / "config").mkdir(parents=True, exist_ok=True)
    (dest / "include" / "config" / "kernel.release").write_text(release + "\n")
    (dest / "vmlinux").write_bytes(elf_kernel() if pvh else elf_kernel(note(b"Linux", 6)))
    if bzimage:
        (dest / "arch" / "x86" / "boot").mkdir(parents=True, exist_ok=True)
        (dest / "arch" / "x86" / "boot" / "bzImage").write_bytes(b"MZ fake bzImage")
    (dest / "System.map").write_text("ffffffff81000000 T _text\n")
    (dest / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    for stem in modules:
        (dest / stem).parent.mkdir(parents=True, exist_ok=True)
        (dest / f"{stem}.ko").write_bytes(fake_module(f"{release} SMP mod_unload ", Path(stem).name))
    (dest / "modules.order").write_text("".join(f"{stem}{order_form}\n" for stem in modules))
    return dest


def installed_root(dest: Path, release: str = RELEASE, config: str | None = None) -> Path:
    """What `make install modules_install` leaves under INSTALL_PATH=dest/boot
    and INSTALL_MOD_PATH=dest."""
    (dest / "boot").mkdir(parents=True)
    (dest / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ fake bzImage")
    (dest / "boot" / f"config-{release}").write_text(config if config is not None else guest_config())
    (dest / "boot" / f"System.map-{release}").write_text("ffffffff81000000 T _text\n")
    mdir = dest / "lib" / "modules" / release
    for stem in MODULES:
        (mdir / "kernel" / stem).parent.mkdir(parents=True, exist_ok=True)
        (mdir / "kernel" / f"{stem}.ko").write_bytes(fake_module(f"{release} SMP mod_unload ", Path(stem).name))
    (mdir / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    return dest
