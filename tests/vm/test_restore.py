"""Restored guests on a real kernel: each one fresh (randomness, clock, port,
settings), its console log starting at the restore, and a missing, stale or
broken snapshot replaced by a cold boot that saves it again."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from harness.guest.image import READY_MARKER, WAIT_MARKER
from harness.guest.snapshot import ColdReason, StartPath
from harness.guest.vm import Vm, VmConfig

PROBE = (
    "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /proc/sys/kernel/random/boot_id; "
    "cat /proc/sys/kernel/random/uuid; date +%s"
)


def _restored(image, config: VmConfig = VmConfig(), name: str = "restored") -> Vm:
    vm = Vm(image, config, name=name).boot()
    if vm.start.path is not StartPath.RESTORED:  # the first guest of a fresh cache saves the snapshot
        vm.kill()
        vm = Vm(image, config, name=name).boot()
    assert vm.start.path is StartPath.RESTORED, vm.start.describe()
    return vm


def test_two_guests_restored_from_one_snapshot_share_no_randomness(image):
    a = _restored(image, name="twin-a")
    b = Vm(image, VmConfig(), name="twin-b").boot()
    try:
        assert b.start.path is StartPath.RESTORED and b.start.snapshot == a.start.snapshot
        assert a.port != b.port
        out_a, out_b = (v.ssh.run(PROBE, check=True).stdout.split() for v in (a, b))
        now = time.time()
        # urandom bytes, boot_id (made on first read, after the reseed) and a new uuid
        for i, what in enumerate(("urandom", "boot_id", "uuid")):
            assert out_a[i] != out_b[i], f"two restored guests share their {what}: {out_a[i]}"
        for out in (out_a, out_b):
            assert abs(int(out[3]) - now) < 5, f"guest clock {out[3]} vs host {now:.0f}"
    finally:
        a.kill()
        b.kill()


@pytest.mark.fresh_vm  # it moves the clock
def test_the_seed_helper_rekeys_and_sets_the_clock_or_fails_loudly(vm):
    seed = "ab" * 64
    out = vm.ssh.run(f"harness-seed {seed} 2000000000 5 && date +%s; harness-seed abc 1 2; echo $?")
    when, bad = out.stdout.split()
    assert 2000000000 <= int(when) < 2000000000 + 30 and bad == "2", out
    assert "bad hex seed" in out.stderr


def test_the_runs_settings_reach_a_restored_guest(image):
    vm = _restored(image, VmConfig(rcu_expedited=True, hung_task_timeout_s=7))
    try:
        out = vm.ssh.run("cat /sys/kernel/rcu_expedited /proc/sys/kernel/hung_task_timeout_secs", check=True)
        assert out.stdout.split() == ["1", "7"]
    finally:
        vm.kill()


def test_a_restored_guests_console_log_starts_at_the_restore(image):
    vm = _restored(image)
    try:
        vm.ssh.run("echo harness-after-restore > /dev/kmsg", check=True)
        assert vm.wait_console("harness-after-restore", timeout=10)
        head = vm.console_text().splitlines()
        assert head[0].startswith("# ") and "-incoming defer" in head[0]
        assert head[1].startswith("# restored from snapshot ")
        base_log = head[1].rsplit(" ", 1)[1]
        assert WAIT_MARKER in open(base_log).read()
        text = vm.console_text()
        assert READY_MARKER in text and WAIT_MARKER not in text and "Run /init" not in text
    finally:
        vm.kill()


def test_missing_broken_and_stale_snapshots_give_a_cold_boot_that_saves_again(image):
    config = VmConfig(memory_mb=640)  # a machine of its own: its own snapshot
    shutil.rmtree(Vm(image, config).snapshot().root, ignore_errors=True)

    def boot() -> Vm:
        vm = Vm(image, config, name="fallback").boot()
        try:
            assert vm.ssh.run("true").ok
        finally:
            vm.kill()
        return vm

    first = boot()
    assert (first.start.path, first.start.reason, first.start.saved) == (StartPath.COLD, ColdReason.MISSING, True)
    assert boot().start.path is StartPath.RESTORED
    snap = first.snapshot()
    gen, _ = snap.current()
    state = gen / "state"
    st = state.stat()
    state.write_bytes(os.urandom(st.st_size))  # same size and time: only the restore can tell
    os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns))
    broken = boot()
    assert (broken.start.path, broken.start.reason, broken.start.saved) == (StartPath.COLD, ColdReason.FAILED, True)
    assert boot().start.path is StartPath.RESTORED
    gen, _ = snap.current()
    os.truncate(gen / "ram", 4096)
    stale = boot()
    assert (stale.start.path, stale.start.reason, stale.start.saved) == (StartPath.COLD, ColdReason.STALE, True)
    assert "ram file changed" in stale.start.detail
    assert boot().start.path is StartPath.RESTORED
    forced = Vm(image, VmConfig(memory_mb=640, cold_boot=True)).boot()
    forced.kill()
    assert (forced.start.path, forced.start.reason, forced.start.saved) == (StartPath.COLD, ColdReason.ASKED, False)
    shutil.rmtree(snap.root, ignore_errors=True)
