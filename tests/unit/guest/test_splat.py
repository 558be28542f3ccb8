"""Table-driven tests for harness.guest.splat on real console excerpts.

Each file in data/splats/ is one case; CASES says what parse() must find in it.
To add a case (e.g. a capture from our own guest): drop the log in
data/splats/ and add one row below. A file without a row fails the suite.

Sources: files named syzNNNN_* are trimmed copies of google/syzkaller
pkg/report/testdata/linux/report/NNNN; gh_* are excerpts quoted in public
GitHub issues (CachyOS/linux-cachyos#841, dolohow/uksm#44,
GrapheneOS-Archive/linux-hardened#69).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guest import splat
from harness.guest.splat import KINDS, Splat, SplatKind, new_splats, parse, parse_file

DATA = Path(__file__).resolve().parents[1] / "data" / "splats"

# file -> [(kind, title, modules, last_unloaded, panicked), ...] in log order.
# modules=None means "don't check".
CASES: dict[str, list[tuple]] = {
    "syz0450_clean_boot.log": [],
    "syz1014_1015_not_splats.log": [],
    "syz0000_bug_paging_request_oops.log": [
        ("bug", "BUG: unable to handle kernel paging request in __memset", (), None, False)
    ],
    "syz0600_gpf_kasan_caller_ids.log": [
        ("gpf", "general protection fault in nl802154_add_llsec_key", (), None, False)
    ],
    "syz0600_gpf_crlf_timestamps.log": [("gpf", "general protection fault in nl802154_add_llsec_key", (), None, False)],
    "syz0200_gpf_panic_interleaved.log": [("gpf", "general protection fault in ip6t_do_table", (), None, True)],
    "syz0650_kasan_slab_oob.log": [
        ("kasan", "KASAN: slab-out-of-bounds Write in test_and_clear_bit", None, None, False)
    ],
    "syz1013_warning_new_format_panic.log": [("warning", "WARNING in ifs_free", (), None, True)],
    "syz1006_warning_classic_serial_noise.log": [("warning", "WARNING in iommu_map_sg", (), None, False)],
    "syz0400_warning_no_timestamps_panic.log": [("warning", "WARNING in __flush_work", None, None, True)],
    "syz0250_lockdep_circular.log": [
        ("lockdep", "possible circular locking dependency detected in blkdev_reread_part", None, None, False)
    ],
    "syz1005_lockdep_inconsistent_interleaved.log": [
        ("lockdep", "inconsistent lock state in x25_kill_by_neigh", None, None, False)
    ],
    "syz1000_hung_task_arm64.log": [("hung_task", "INFO: task hung in do_read_cache_folio", None, None, False)],
    "syz0550_hung_task_arm32_no_timestamps.log": [
        ("hung_task", "INFO: task hung in mpage_prepare_extent_to_map", None, None, False)
    ],
    "syz0300_rcu_stall.log": [("rcu_stall", "INFO: rcu detected stall in smp_call_function_single", None, None, False)],
    "syz0350_soft_lockup_panic.log": [
        ("lockup", "BUG: soft lockup in __sanitizer_cov_trace_const_cmp4", (), None, True)
    ],
    "syz0680_arm64_unable_to_handle_two_cpus.log": [
        ("oops", "Unable to handle kernel paging request in __kmem_cache_alloc_node", (), None, True),
        ("oops", "Unable to handle kernel paging request at virtual address ADDR", None, None, False),
    ],
    "gh_cachyos841_kernel_bug_oops_invalid_opcode.log": [("bug", "kernel BUG in iomap_write_end", None, None, False)],
    "gh_uksm44_kernel_bug_modules_no_timestamps.log": [
        ("bug", "kernel BUG in scan_vma_one_page", ("nfnetlink_queue", "nfnetlink_log", "sctp", "ip6t"), None, False)
    ],
    "gh_hardened69_invalid_opcode_modules.log": [
        (
            "invalid_opcode",
            "invalid opcode in __list_del_entry_valid",
            (
                "netconsole",
                "rpcsec_gss_krb5",
                "auth_rpcgss",
                "nfsv4",
                "dns_resolver",
                "nfs",
                "lockd",
                "grace",
                "fscache",
                "sunrpc",
                "binfmt_misc",
                "virtio_balloon",
                "virtio_net",
            ),
            None,
            False,
        )
    ],
    # Our own guests (Debian 6.1.0-56, TCG), raw console bytes ("\r\r\n" kept):
    # the unsafe scheme's oops (tests/vm/test_schemes.py check 5: un_prov0's
    # text freed under a sleeping op; RIP is a bare address, so no "in func",
    # and it is in module space: the module last unloaded is named), and
    # WARN_ON(1) in a throwaway module's init (module marked "(OE+)").
    "own61_unsafe_oops_freed_module_text.log": [
        (
            "bug",
            "BUG: unable to handle page fault for address: ADDR (at an address of freed module un_prov0)",
            (
                "un_core",
                "virtio_net",
                "net_failover",
                "failover",
                "virtio_pci",
                "virtio",
                "virtio_ring",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
            ),
            "un_prov0",
            False,
        )
    ],
    # The harness's debug kernel (6.12.118 + lockdep + KASAN, TCG): the
    # unsafe scheme's lookup race (KASAN sees the NULL ops first, then the
    # oops), and rwsem-unsorted's ABBA in the two-bus race (lockdep names the
    # bus rwsems' classes; the real deadlock follows as hung tasks).
    "own612debug_unsafe_kasan_null_deref.log": [
        ("kasan", "KASAN: null-ptr-deref Write in un_prov0_call", (), None, False),
        ("bug", "BUG: kernel NULL pointer dereference in un_prov0_call", ("un_prov0", "un_core"), None, False),
    ],
    "own612debug_unsorted_lockdep_circular_then_hung.log": [
        ("lockdep", "possible circular locking dependency detected in rwu_gate_run", (), None, False),
        ("hung_task", "INFO: task hung in rwu_gate_run", (), None, False),
    ],
    "own61_warning_in_module_init.log": [
        (
            "warning",
            "WARNING in warn_init",
            (
                "warn",
                "virtio_net",
                "net_failover",
                "failover",
                "virtio_pci",
                "virtio",
                "virtio_ring",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
            ),
            None,
            False,
        )
    ],
    # Our own guest (6.1): `tail /dev/zero` until the OOM killer took it.
    "own_oom_user_hog_6.1.log": [("oom", "out of memory: tail invoked oom-killer", None, None, False)],
    "two_splats_warning_then_paging.log": [
        ("warning", "WARNING in iommu_map_sg", (), None, False),
        ("bug", "BUG: unable to handle kernel paging request in __memset", (), None, False),
    ],
}


def test_every_fixture_has_a_row():
    files = {p.name for p in DATA.iterdir() if p.is_file()}
    assert files == set(CASES), "add a CASES row for each file in data/splats/"


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture(name):
    splats = parse_file(DATA / name)
    got = [(s.kind, s.title) for s in splats]
    assert got == [(k, t) for k, t, *_ in CASES[name]]
    for s, (_kind, _title, modules, last, panicked) in zip(splats, CASES[name]):
        assert s.kind in KINDS
        if modules is not None:
            assert s.modules == modules
        assert s.last_unloaded == last
        assert s.panicked == panicked
        assert s.lines and "\r" not in "".join(s.lines)
        assert len(s.lines) <= 200


def test_oops_after_bug_is_one_record():
    (s,) = parse_file(DATA / "syz0000_bug_paging_request_oops.log")
    assert s.start_line == 0
    assert any("Oops: 0002 [#1]" in ln for ln in s.lines)
    assert not any("unrelateed" in ln for ln in s.lines)  # untimestamped noise skipped


def test_record_stops_at_end_markers():
    (s,) = parse_file(DATA / "syz0200_gpf_panic_interleaved.log")
    end = next(i for i, ln in enumerate(s.lines) if "---[ end trace" in ln)
    assert "Kernel panic - not syncing: Fatal exception" in s.lines[end + 1]
    assert "(ftrace buffer empty)" in s.lines[-1]
    assert not any("Kernel Offset" in ln for ln in s.lines)
    (k,) = parse_file(DATA / "syz0650_kasan_slab_oob.log")
    assert set(k.lines[-1].split("]")[-1].strip()) == {"="}


def test_other_cpus_lines_excluded():
    (s,) = parse_file(DATA / "syz1005_lockdep_inconsistent_interleaved.log")
    assert not any("NILFS" in ln for ln in s.lines)
    first, second = parse_file(DATA / "syz0680_arm64_unable_to_handle_two_cpus.log")
    assert all("T3083" in ln for ln in first.lines)
    assert all("T3080" in ln for ln in second.lines)


def test_crlf_same_as_lf():
    a = parse_file(DATA / "syz0600_gpf_crlf_timestamps.log")
    b = parse_file(DATA / "syz0600_gpf_kasan_caller_ids.log")
    assert [(s.kind, s.title, len(s.lines)) for s in a] == [(s.kind, s.title, len(s.lines)) for s in b]


def test_new_splats_by_byte_offset():
    text = (DATA / "two_splats_warning_then_paging.log").read_text()
    first, second = parse(text)
    cut = len("\n".join(text.split("\n")[: second.start_line]).encode()) + 1
    assert new_splats(text, 0) == [first, second]
    assert new_splats(text, cut) == [second]
    assert new_splats(text, cut + 1) == []
    assert new_splats(text, len(text.encode())) == []


def test_modules_and_last_unloaded():
    # Format of lib/module print_modules() on 6.x (taint flags, last unloaded).
    log = (
        "[   41.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
        "[   41.000002] #PF: supervisor read access in kernel mode\n"
        "[   41.000003] Oops: 0000 [#1] PREEMPT SMP NOPTI\n"
        "[   41.000004] CPU: 1 PID: 321 Comm: insmod Tainted: G           OE      6.1.0-18-amd64 #1  Debian 6.1.76-1\n"
        "[   41.000005] RIP: 0010:un_prov0_call+0x10/0x20 [unprov]\n"
        "[   41.000006] Modules linked in: unprov(OE) ext4 crc16 mbcache jbd2 [last unloaded: helper(OE)]\n"
        "[   41.000007] ---[ end trace 0000000000000000 ]---\n"
        "[   41.000008] Kernel panic - not syncing: Fatal exception\n"
        "[   41.000009] Kernel Offset: disabled\n"
        "[   41.000010] ---[ end Kernel panic - not syncing: Fatal exception ]---\n"
    )
    (s,) = parse(log)
    assert s == Splat(
        kind="bug",
        title="BUG: kernel NULL pointer dereference in un_prov0_call",
        lines=s.lines,
        modules=("unprov", "ext4", "crc16", "mbcache", "jbd2"),
        last_unloaded="helper",
        start_line=0,
    )
    assert len(s.lines) == 8 and s.panicked


def test_lone_panic_is_its_own_record():
    log = "[    1.5] VFS: Cannot open root device\n[    1.6] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
    (s,) = parse(log)
    assert s.kind == "panic" and s.start_line == 1
    assert s.title.startswith("Kernel panic - not syncing: VFS: Unable to mount root fs")


def test_prompt_ends_record():
    log = "[  5.0] INFO: task modprobe:88 blocked for more than 120 seconds.\n[  5.1] Call Trace:\nroot@debian:~# \n[  9.0] Call Trace:\n"
    (s,) = parse(log)
    assert len(s.lines) == 2


def test_debug_kernel_lockdep_report_keeps_the_lock_names():
    """The lock-order control is judged on the classes lockdep names: the
    report's lines (not only its title) must carry both bus rwsems."""
    lockdep, *_ = parse_file(DATA / "own612debug_unsorted_lockdep_circular_then_hung.log")
    text = "\n".join(lockdep.lines)
    assert "(rwu_bus0_rwsem)" in text and "(rwu_bus1_rwsem)" in text and "*** DEADLOCK ***" in text


# ---------------------------------------------------------------- crash or warning, from the HEADERS rows

KMSAN = (
    "[   50.000000] =====================================================\n"
    "[   50.000001] BUG: KMSAN: uninit-value in foo_read+0x1a/0x40\n"
    "[   50.000002]  foo_read+0x1a/0x40\n"
    "[   50.000003] =====================================================\n"
)
KCSAN = (
    "[   51.000000] ==================================================================\n"
    "[   51.000001] BUG: KCSAN: data-race in foo_a / foo_b\n"
    "[   51.000002] write to 0xffff888003b4c0a8 of 4 bytes by task 1 on cpu 0:\n"
    "[   51.000003] ==================================================================\n"
)
UBSAN = (
    "[    5.000000] ================================================================================\n"
    "[    5.000001] UBSAN: shift-out-of-bounds in drivers/fake/fake.c:42:17\n"
    "[    5.000002] shift exponent 64 is too large for 64-bit type 'long unsigned int'\n"
    "[    5.000003] Call Trace:\n"
    "[    5.000004]  <TASK>\n"
    "[    5.000005]  dump_stack_lvl+0x44/0x5c\n"
    "[    5.000006]  __ubsan_handle_shift_out_of_bounds.cold+0x61/0xef\n"
    "[    5.000007]  fake_probe+0x10/0x20 [fake]\n"
    "[    5.000008]  </TASK>\n"
    "[    5.000009] ================================================================================\n"
    "[    5.000010] fake: probed\n"
)
OLD_UBSAN = "[    5.000001] UBSAN: Undefined behaviour in lib/fake.c:12:3\n"


# 6.12-debug, vfat's file system type without .owner (bench/bugs): a mount
# after the unload initialises an inode lock whose class key was in vfat.
UNREGISTERED_KEY = (
    "[   69.890251] BUG: key ffffffffa009c188 has not been registered!\n"
    "[   69.893254] ------------[ cut here ]------------\n"
    "[   69.893546] DEBUG_LOCKS_WARN_ON(1)\n"
)


def test_an_unregistered_lock_key_is_a_lockdep_report_titled_whole():
    (got,) = parse(UNREGISTERED_KEY)
    assert (got.kind, got.title, got.crash) == (SplatKind.LOCKDEP, "BUG: key has not been registered!", False)


def test_any_other_bug_line_is_titled_by_the_whole_line():
    (got,) = parse("[    3.000001] BUG: Bad page state in process swapper  pfn:0a1b2\n")
    assert (got.kind, got.title, got.crash) == (SplatKind.BUG, "BUG: Bad page state in process swapper pfn:0a1b2", True)


def test_sanitizer_reports_get_their_tools_kind_and_class():
    got = [(s.kind, s.title, s.crash, len(s.lines)) for s in parse(KMSAN + KCSAN + UBSAN + OLD_UBSAN)]
    assert got == [
        (SplatKind.KMSAN, "KMSAN: uninit-value in foo_read", True, 3),
        (SplatKind.KCSAN, "KCSAN: data-race in foo_a", False, 3),
        (SplatKind.UBSAN, "UBSAN: shift-out-of-bounds in fake_probe", False, 9),
        (SplatKind.UBSAN, "UBSAN: Undefined behaviour in lib/fake.c", False, 1),
    ]
    assert [s.kind for s in parse(KMSAN + KCSAN)] == ["kmsan", "kcsan"]  # the JSON's names


def test_crash_kinds_are_the_memory_errors_and_the_dead_kernels():
    crashes = {k.value for k in SplatKind if k.crash}
    assert crashes == {"oops", "bug", "gpf", "invalid_opcode", "panic", "kasan", "kfence", "kmsan", "oom"}
    assert {k.value for k in SplatKind if not k.crash} == {
        "warning",
        "lockdep",
        "lockup",
        "rcu_stall",
        "hung_task",
        "kcsan",
        "ubsan",
    }
    assert KINDS == set(SplatKind) and {h.kind for h in splat.HEADERS} == set(SplatKind)


def test_a_kind_whose_rows_disagree_is_refused(monkeypatch):
    warning_bug = splat._h(r"^BUG: odd", SplatKind.BUG, splat.Severity.WARNING, splat._t_header)
    monkeypatch.setattr(splat, "HEADERS", (*splat.HEADERS, warning_bug))
    with pytest.raises(AssertionError, match="bug is a crash in one HEADERS row, a warning in another"):
        splat._severities()


def test_a_kind_given_by_name_becomes_its_member():
    s = Splat("kasan", "KASAN: x", ("x",), (), None, 0)
    assert s.kind is SplatKind.KASAN and s.crash and f"{s.kind}" == "kasan"
    with pytest.raises(ValueError):
        Splat("nonsense", "x", (), (), None, 0)


@pytest.mark.parametrize(
    "fault, named",
    [
        ("BUG: unable to handle page fault for address: ffffffffc02460d0", True),  # module space
        ("BUG: unable to handle page fault for address: ffff888006c51ee0", False),  # the direct map
        ("BUG: KASAN: vmalloc-out-of-bounds in f+0x1/0x2 [x]\nRead of size 8 at addr ffffffffc0a00010 by task t", True),
    ],
)
def test_a_fault_in_module_space_names_the_module_last_unloaded(fault, named):
    log = "\n".join(
        [
            f"[    4.772347] {fault.splitlines()[0]}",
            *(f"[    4.772348] {ln}" for ln in fault.splitlines()[1:]),
            "[    4.774613] RIP: 0010:vfs_read+0x8a/0x310",
            "[    4.780775] Modules linked in: virtio_net [last unloaded: ownerless(OE)]",
            "[    4.790000] ---[ end trace 0000000000000000 ]---",
        ]
    )
    [s] = splat.parse(log)
    assert s.last_unloaded == "ownerless"
    assert s.title.endswith("(at an address of freed module ownerless)") == named, s.title
