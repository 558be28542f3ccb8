"""--module files are checked before boot: ELF, a .modinfo section, the kernel's vermagic."""

import pytest

from elfdata import RELEASE, elf_object, fake_module
from harness.errors import HarnessError
from harness.guest.modcheck import check_module, sections


def _write(tmp_path, data: bytes, name: str = "fake.ko"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_module_for_this_kernel_passes(tmp_path):
    info = check_module(_write(tmp_path, fake_module(name="rc_core")), RELEASE)
    assert (info.name, info.release) == ("rc_core", RELEASE)
    assert info.vermagic == f"{RELEASE} SMP preempt mod_unload modversions"
    assert ("license", "GPL") in info.fields


def test_sections_are_read_by_name():
    secs = sections(elf_object({".text": b"\xc3", ".data": b"abc"}), "x")
    assert secs[".text"] == b"\xc3" and secs[".data"] == b"abc"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello, world\n", "{p} is not an ELF file"),
        (b"", "{p} is not an ELF file"),
        (b"\x7fELF\x02\x01", "{p} is not a valid ELF file (truncated header)"),
        (elf_object({".text": b"\xc3"}), "{p} has no .modinfo section: not a kernel module"),
        (elf_object({".modinfo": b"license=GPL\0"}), "{p} has no vermagic in .modinfo: not a module built by kbuild"),
        (
            elf_object({".modinfo": b"vermagic=x\0"}, e_type=2),
            "{p} is an ELF executable or library, not a kernel module (.ko)",
        ),
        (
            elf_object({".modinfo": b"vermagic=x\0"}, elf_class=1),
            "{p} is not a 64-bit little-endian ELF file: not an x86-64 kernel module",
        ),
        (fake_module()[:200], "{p} is not a valid ELF file (bad section table)"),
        (
            fake_module("6.12.57+deb13-amd64 SMP preempt mod_unload modversions "),
            "{p} was built for 6.12.57+deb13-amd64 (vermagic '6.12.57+deb13-amd64 SMP preempt mod_unload "
            "modversions'), not " + RELEASE,
        ),
    ],
)
def test_what_is_not_a_module_for_this_kernel_is_refused(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(HarnessError) as e:
        check_module(path, RELEASE)
    assert str(e.value) == message.format(p=path)


def test_a_section_past_the_end_is_refused(tmp_path):
    data = bytearray(fake_module())
    shoff = int.from_bytes(data[0x28:0x30], "little")
    modinfo_hdr = shoff + 2 * 64  # sections: null, .text, .modinfo, .shstrtab
    data[modinfo_hdr + 32 : modinfo_hdr + 40] = (1 << 20).to_bytes(8, "little")  # sh_size
    with pytest.raises(HarnessError, match="section past the end of the file"):
        check_module(_write(tmp_path, bytes(data)), RELEASE)


def test_a_missing_module_is_refused(tmp_path):
    with pytest.raises(HarnessError, match=r"module .*nope.ko does not exist"):
        check_module(tmp_path / "nope.ko", RELEASE)
