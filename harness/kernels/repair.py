"""An unpacked kernel's marker (.unpacked.json: written last, it publishes the
kernel, with the size and hash of what booting and building read), the damage
it shows, and the one repair done in place: a bad vmlinux made again."""

from __future__ import annotations

import json
from pathlib import Path

from ..util import damage_of, read_json_object, stamps_of
from .apt import ResolvedKernel
from .files import KernelFiles, root_of
from .vmlinux import extract_vmlinux


def marker(res: ResolvedKernel) -> Path:
    return root_of(res) / ".unpacked.json"


def cached(res: ResolvedKernel) -> bool:
    return marker(res).is_file()


def checked_files(release: str) -> tuple[str, ...]:
    """What booting and building an image read from the unpacked kernel (paths
    under its root); their stamps are kept in the marker."""
    mods = f"lib/modules/{release}"
    return (
        f"boot/vmlinux-{release}",
        f"boot/vmlinuz-{release}",
        f"boot/config-{release}",
        f"{mods}/modules.dep",
        f"{mods}/modules.order",
        f"{mods}/modules.builtin",
        f"{mods}/modules.builtin.modinfo",
    )


def damage_of_kernel(files: KernelFiles) -> str | None:
    """Why an unpacked kernel cannot be trusted (missing marker, a file whose
    size or hash changed), or None.  Cheap after the first call in a process."""
    path = files.root.parent / ".unpacked.json"
    if not path.is_file():
        return "it is not unpacked"
    recorded = read_json_object(path).get("files")
    # What the marker recorded (a local tree has only the images it has),
    # and always the image that boots.
    rels = list(recorded) if isinstance(recorded, dict) and recorded else list(checked_files(files.release))
    boot = str(files.boot_image.relative_to(files.root))
    return damage_of(files.root, recorded, rels + [boot] * (boot not in rels))


def write_marker(res: ResolvedKernel) -> None:
    data = {
        "abi": res.abi,
        "version": res.version,
        "packages": list(res.pins),
        "files": stamps_of(root_of(res) / "root", checked_files(res.abi)),
    }
    tmp = marker(res).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(marker(res))


def repair(res: ResolvedKernel, files: KernelFiles) -> bool:
    """Fix a damaged unpacked kernel in place if only its vmlinux is bad
    (it is made from vmlinuz here); False if it needs unpacking again."""
    recorded = read_json_object(marker(res)).get("files")
    if not isinstance(recorded, dict):
        # An older harness recorded nothing: trust the package files, remake vmlinux.
        if not files.vmlinuz.is_file():
            return False
        extract_vmlinux(files.vmlinuz, files.vmlinux)
        write_marker(res)
        return True
    vmlinux = f"boot/vmlinux-{res.abi}"
    others = [rel for rel in checked_files(res.abi) if rel != vmlinux]
    if damage_of(files.root, recorded, others) is not None:
        return False
    extract_vmlinux(files.vmlinuz, files.vmlinux)
    write_marker(res)
    return True
