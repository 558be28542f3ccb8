"""A guest whose boot splats is never a snapshot, and every run on it says the
guest was broken; a fresh guest's own log is clean and its sanitisers are awake."""

from __future__ import annotations

import pytest

from harness.guest.image import build_image
from harness.guest.splat import parse
from harness.guest.vm import Vm, VmConfig
from harness.race import engine as race
from harness.race import schemerace
from harness.race.kbuild import ModuleSetSpec, build
from harness.race.outcomes import Verdict, problem

# init prints a kernel WARNING before the save point when its command line asks.
PLANTED = VmConfig(cmdline_extra=("harness.plant_boot_warning",))
PLANTED_TITLE = "WARNING in harness_planted_boot_warning"


@pytest.mark.expect_splat
def test_a_guest_whose_boot_splats_is_not_saved_and_its_runs_are_broken(kernel):
    mods = build(kernel, ModuleSetSpec("refcount"))
    guest = Vm(build_image(kernel, tuple(mods.ko_files)), PLANTED, name="planted")
    snap = guest.snapshot()
    try:
        guest.boot()
        assert [s.title for s in guest.boot_splats] == [PLANTED_TITLE]
        assert not guest.start.saved and snap.current()[0] is None, "a guest that splatted was saved"
        assert guest.console_text().count("harness_planted_boot_warning+0x0/0x10") == 2, (
            "the boot was not tried a second time"
        )
        spec = race.RaceSpec(schemes=("refcount",), workloads=("lookup",), duration_s=2)
        schemerace.prepare_guest(guest, mods, spec)
        run = schemerace.run_one(guest, mods, spec, "refcount", "lookup", kernel.release)
    finally:
        guest.kill()
    assert run.verdict is Verdict.BROKEN and run.splats == []
    assert f"broken guest: its boot showed {PLANTED_TITLE}" in (problem(run) or "")


def test_a_fresh_guest_has_a_clean_log_and_awake_sanitisers(vm, kernel):
    dmesg = vm.ssh.run("dmesg", check=True).stdout
    assert parse(dmesg) == [], "a fresh guest's kernel log has a splat"
    cmdline = vm.ssh.run("cat /proc/cmdline", check=True).stdout.split()
    if kernel.config.get("CONFIG_KASAN") == "y":
        assert "kasan_multi_shot" in cmdline, "KASAN would report once per boot"
    if kernel.lockdep:
        assert race.debug_locks(vm) is True, "lockdep is off in a fresh guest"
