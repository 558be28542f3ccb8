"""The gdb script and the kernel symbol file made from a guest's kallsyms."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.guest import gdb

KALLSYMS = """\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff81001234 t do_one_initcall
ffffffff81300000 T do_sys_open
ffffffff82a05000 D jiffies_64
ffffffff82b00000 B some_bss
ffffffff82c00000 r a_table
ffffffff82d00000 t dummy_setup\t[dummy]
0000000000012340 D per_cpu_thing
"""


def test_kallsyms_become_text_labels_and_absolute_data():
    asm, base = gdb.kallsyms_assembly(KALLSYMS)
    assert base == 0xFFFFFFFF81000000
    assert ".org 0x300000\n.globl do_sys_open\n.type do_sys_open,@function\ndo_sys_open:" in asm
    assert ".set jiffies_64,0xffffffff82a05000" in asm and ".set some_bss,0xffffffff82b00000" in asm
    assert "dummy_setup" not in asm, "module symbols come from the module's .ko"
    assert "per_cpu_thing" not in asm and "fixed_percpu_data" not in asm, "per-CPU offsets are no addresses"
    offsets = [int(line.split()[1], 16) for line in asm.splitlines() if line.startswith(".org")]
    assert offsets == sorted(offsets), "the assembler's .org only goes forward"


def test_hidden_addresses_are_one_line():
    with pytest.raises(HarnessError, match="kptr_restrict"):
        gdb.kallsyms_assembly("0000000000000000 T startup_64\n0000000000000000 T do_sys_open\n")


def test_script_places_each_module_section_and_connects_last(tmp_path):
    mods = [
        gdb.LoadedModule("dummy", Path("/x/dummy.ko"), {".text": 0xFFFFFFFFC0100000, ".data": 0xFFFFFFFFC0104000}),
        gdb.LoadedModule("nosections", Path("/x/n.ko"), {".data": 1}),
    ]
    script = gdb.gdb_script(4321, Path("/x/kernel-symbols.elf"), mods).splitlines()
    assert script[2] == "file /x/kernel-symbols.elf"
    assert script[3] == "add-symbol-file /x/dummy.ko 0xffffffffc0100000 -s .data 0xffffffffc0104000"
    assert len(script) == 5 and script[-1] == "target remote 127.0.0.1:4321"


@pytest.mark.skipif(not shutil.which("gdb") or not shutil.which("ld"), reason="needs gdb and binutils")
def test_gdb_breaks_on_and_names_kernel_functions_of_the_symbol_file(tmp_path):
    elf = gdb.kernel_symbol_file(KALLSYMS, tmp_path / "k.elf")
    out = subprocess.run(
        [
            "gdb",
            "-q",
            "-batch",
            "-ex",
            f"file {elf}",
            "-ex",
            "break do_sys_open",
            "-ex",
            "info symbol 0xffffffff81300010",
            "-ex",
            "info address jiffies_64",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "Breakpoint 1 at 0xffffffff81300000" in out
    assert "do_sys_open + 16 in section .ktext" in out
    assert 'Symbol "jiffies_64" is at 0xffffffff82a05000' in out
    assert elf.stat().st_size < 4096, "the text section takes no room in the file (NOBITS)"
