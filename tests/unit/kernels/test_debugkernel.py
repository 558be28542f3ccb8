"""The debug kernel's pure parts: config merge, release key, version pick."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.kernels import apt, buildroot, table
from harness.kernels import debugkernel as dk
from harness.kernels.apt import Role
from harness.kernels.apt.walk import walk

DEBUG = table.ROWS["6.12-debug"]

BASE = """\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_CC_VERSION_TEXT="gcc (Debian 14.2.0-19) 14.2.0"
CONFIG_DRM=y
# CONFIG_KASAN is not set
CONFIG_LOCALVERSION=""
CONFIG_MODULES=y
"""


def test_parse_config_reads_values_and_not_set_lines():
    assert dk.parse_config(BASE) == {
        "CONFIG_CC_VERSION_TEXT": '"gcc (Debian 14.2.0-19) 14.2.0"',
        "CONFIG_DRM": "y",
        "CONFIG_KASAN": "n",
        "CONFIG_LOCALVERSION": '""',
        "CONFIG_MODULES": "y",
    }
    assert dk.parse_config("# a comment\n\n  CONFIG_X=m  \n# CONFIG_Y is not set\n") == {
        "CONFIG_X": "m",
        "CONFIG_Y": "n",
    }


def test_merge_replaces_in_place_and_appends_new_options():
    merged = dk.merge_config(BASE, {"CONFIG_DRM": "n", "CONFIG_KASAN": "y", "CONFIG_PVH": "y"})
    lines = merged.splitlines()
    assert "# CONFIG_DRM is not set" in lines and "CONFIG_DRM=y" not in lines
    assert "CONFIG_KASAN=y" in lines and "# CONFIG_KASAN is not set" not in lines
    assert lines.index("CONFIG_KASAN=y") < lines.index("CONFIG_MODULES=y")  # in place
    assert lines[-1] == "CONFIG_PVH=y"
    assert dk.parse_config(merged)["CONFIG_CC_VERSION_TEXT"] == '"gcc (Debian 14.2.0-19) 14.2.0"'


def test_unmet_names_what_olddefconfig_dropped():
    wanted = {"CONFIG_KASAN": "y", "CONFIG_DRM": "n", "CONFIG_GONE": "y", "CONFIG_OFF": "n"}
    final = {"CONFIG_KASAN": "y", "CONFIG_DRM": "y"}
    assert dk.unmet(wanted, final) == ["CONFIG_DRM=n (got y)", "CONFIG_GONE=y (got n)"]


def test_the_fragment_asks_for_lockdep_kasan_and_what_the_harness_needs():
    assert DEBUG.fragments[0] == "debug.config"
    frag = dk.parse_config(DEBUG.fragment_paths[0].read_text())
    for opt in (
        "PROVE_LOCKING",
        "KASAN",
        "KASAN_GENERIC",
        "KASAN_INLINE",
        "KASAN_VMALLOC",
        "DEBUG_ATOMIC_SLEEP",
        "DETECT_HUNG_TASK",
        "DEBUG_LIST",
        "MODULE_UNLOAD",
        "FUNCTION_TRACER",
        "DYNAMIC_FTRACE",
        "KPROBES",
        "KALLSYMS",
        "PVH",
        "VIRTIO_PCI",
        "VIRTIO_NET",
        "DEVTMPFS",
    ):
        assert frag.get(f"CONFIG_{opt}") == "y", opt
    assert frag["CONFIG_PANIC_ON_OOPS"] == "n"


def _fake_lookup(versions, sha="ab" * 32):
    class Lookup:
        def versions(self, names, suites):
            assert suites == apt.suites_of("trixie")
            return {n: list(versions) for n in names if n == "linux-source-6.12" and versions}

        def stanzas(self, pins):
            return {
                (n, v): {"Package": n, "Version": v, "Architecture": "all", "Size": "153528496", "SHA256": sha}
                for n, v in pins
            }

    return Lookup()


def test_a_source_row_resolves_to_its_newest_source_package_and_a_keyed_release():
    res = walk(DEBUG, _fake_lookup(["6.12.118-1", "6.12.117-1"]))
    assert res.version == "6.12.118-1"
    assert [(p.role, p.pin) for p in res.packages] == [(Role.SOURCE, "linux-source-6.12=6.12.118-1")]
    assert res.abi.startswith("6.12.118-debug-") and len(res.abi) == len("6.12.118-debug-") + 8
    assert dk.localversion(res.abi, dk.upstream_of(res)) == res.abi[len("6.12.118") :]
    # The release follows what the kernel is built from.
    other = walk(DEBUG, _fake_lookup(["6.12.118-1"], sha="cd" * 32))
    assert other.abi != res.abi
    older = walk(DEBUG, _fake_lookup(["6.12.118-1", "6.12.117-1"]), frozenset({"linux-source-6.12=6.12.118-1"}))
    assert older.version == "6.12.117-1" and older.abi.startswith("6.12.117-debug-")


def test_a_changed_fragment_is_a_new_release(tmp_path, monkeypatch):
    frag = tmp_path / "debug.config"
    frag.write_text("CONFIG_KASAN=y\n")
    (tmp_path / "families.config").write_text("CONFIG_MINIX_FS=m\n")
    monkeypatch.setattr(table, "KCONFIGS", tmp_path)
    first = apt.source_release(DEBUG, "6.12.118", "ab")
    frag.write_text("CONFIG_KASAN=n\n")
    assert apt.source_release(DEBUG, "6.12.118", "ab") != first
    second = apt.source_release(DEBUG, "6.12.118", "ab")
    (tmp_path / "families.config").write_text("CONFIG_MINIX_FS=n\n")  # the second fragment counts too
    assert apt.source_release(DEBUG, "6.12.118", "ab") != second


def test_a_source_row_without_its_package_or_of_another_series_is_one_error():
    with pytest.raises(HarnessError, match="no linux-source-6.12 in Debian trixie.*--refresh"):
        walk(DEBUG, _fake_lookup([]))
    with pytest.raises(HarnessError, match="is 6.13.1, not 6.12"):
        walk(DEBUG, _fake_lookup(["6.13.1-1"]))


def test_wanted_config_pins_the_release_string():
    res = walk(DEBUG, _fake_lookup(["6.12.118-1"]))
    wanted = dk.wanted_config(DEBUG, res)
    assert wanted["CONFIG_LOCALVERSION"] == f'"{res.abi[len("6.12.118") :]}"'
    assert wanted["CONFIG_LOCALVERSION_AUTO"] == "n"
    with pytest.raises(HarnessError, match="does not start with"):
        dk.localversion("6.13.0-debug-x", "6.12.118")


def test_debug_kernels_are_named_not_part_of_all_and_build_in_their_own_root():
    assert "6.12-debug" not in table.PACKAGED and "6.12" in table.PACKAGED
    assert [r.name for r in table.parse_specs("all")] == list(table.PACKAGED)
    assert DEBUG.time_factor > 1 and table.ROWS["6.1"].time_factor == 1.0
    mirrors = apt.Mirrors("http://mirror.example/debian", "http://mirror.example/debian-security")
    plain, debug = buildroot.spec_for("trixie", mirrors), buildroot.spec_for_row(DEBUG, mirrors)
    assert debug.suite == "trixie" and debug.identity != plain.identity
    assert set(plain.packages) < set(debug.packages) and "flex" in debug.packages
    assert buildroot.spec_for_row(table.ROWS["6.12"], mirrors) == plain


def test_first_error_prefers_the_compiler_line_over_makes_summary():
    log = (
        "  CC      kernel/fork.o\n/bin/sh: 1: gcc: not found\n"
        "make[4]: *** [scripts/Makefile.host:116: scripts/basic/fixdep] Error 127\n"
    )
    assert dk.first_error(log) == "/bin/sh: 1: gcc: not found"
    assert dk.first_error("make: *** [Makefile:236: __sub-make] Error 2\nleaving\n").startswith("make: ***")
    assert dk.first_error("") is None


def test_the_debug_kernel_boots_its_bzimage_and_stock_kernels_their_elf(tmp_path):
    from harness.kernels import ROWS, KernelFiles

    debug = KernelFiles(ROWS["6.12-debug"], "6.12.118-debug-x", "6.12.118-1", tmp_path)
    stock = KernelFiles(ROWS["6.1"], "6.1.0-57-amd64", "6.1.192-3", tmp_path)
    assert debug.boot_image == debug.vmlinuz and stock.boot_image == stock.vmlinux
    assert debug.time_factor == DEBUG.time_factor and stock.time_factor == 1.0


def test_not_set_is_kept_by_a_zero_where_a_newer_kernel_made_the_option_a_number():
    # 7.2: BOOTPARAM_HUNG_TASK_PANIC counts hung tasks before a panic; 0 is the old "not set".
    wanted = {"CONFIG_BOOTPARAM_HUNG_TASK_PANIC": "n", "CONFIG_PANIC_TIMEOUT": "n"}
    assert dk.unmet(wanted, {"CONFIG_BOOTPARAM_HUNG_TASK_PANIC": "0"}) == []
    assert dk.unmet(wanted, {"CONFIG_PANIC_TIMEOUT": "1"}) == ["CONFIG_PANIC_TIMEOUT=n (got 1)"]


@pytest.mark.parametrize(
    "line, obj",
    [
        ("  CC      kernel/sys.o\n", "kernel/sys.o"),
        ("  CC [M]  fs/minix/inode.o\n", "fs/minix/inode.o"),
        ("  LD [M]  fs/minix/minix.o\n", "fs/minix/minix.o"),
        ("make[2]: Nothing to be done\n", None),
    ],
)
def test_the_progress_line_names_the_object_a_module_line_too(line, obj):
    m = dk._OBJ_LINE.match(line)
    assert (m.group(1) if m else None) == obj
